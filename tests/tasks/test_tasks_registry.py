"""The task registry: eight tasks as data, the report's defaults, and every shared file readable through it."""

from __future__ import annotations

import pytest

from bertwwm.core.errors import UserError
from bertwwm.tasks.registry import TASKS, get_task, task_file, with_classes


def test_the_eight_tasks_with_the_reports_learning_rates():
    lrs = {name: t.learning_rate for name, t in TASKS.items()}
    assert lrs == {"cmrc2018": 3e-5, "drcd": 3e-5, "cjrc": 4e-5, "xnli": 3e-5, "chnsenticorp": 2e-5,
                   "lcqmc": 2e-5, "bq_corpus": 3e-5, "thucnews": 2e-5}
    for name in ("cmrc2018", "drcd", "cjrc", "thucnews"):
        assert TASKS[name].max_seq_length == 512
    assert {t.kind for t in TASKS.values()} == {"classification", "mrc", "cjrc"}
    assert len(TASKS["xnli"].labels) == 3 and len(TASKS["thucnews"].labels) == 10
    assert TASKS["drcd"].metric == TASKS["cmrc2018"].metric == "cmrc2018"
    assert all(t.batch_size == 64 for t in TASKS.values())


def test_lookup_and_aliases():
    assert get_task("CMRC2018").name == "cmrc2018"
    assert get_task("bq").name == "bq_corpus"
    assert get_task("bq-corpus").name == "bq_corpus"
    with pytest.raises(UserError, match="unknown task 'squad'"):
        get_task("squad")


@pytest.mark.parametrize("name, split, n", [
    ("cmrc2018", "dev", 3219), ("drcd", "dev", 3524), ("cjrc", "dev", 6000), ("xnli", "dev", 2490),
    ("chnsenticorp", "test", 1200), ("lcqmc", "dev", 8802), ("bq_corpus", "dev", 10000), ("thucnews", "dev", 10000),
])
def test_every_shared_file_reads_through_the_registry(shared_data, name, split, n):
    task = get_task(name)
    path = task_file(task, split, shared_data / "tasks")
    assert path is not None
    examples = task.read(path)
    assert len(examples) == n
    if not task.is_mrc:
        assert {e.label for e in examples} <= set(task.labels)


def test_missing_split_is_none(shared_data):
    assert task_file(get_task("lcqmc"), "train", shared_data / "tasks") is None
    assert task_file(get_task("lcqmc"), "train", None) is None


def test_metric_value_paths():
    assert get_task("cjrc").metric_value({"overall": {"em": 1.0, "f1": 2.5}}) == 2.5
    assert get_task("drcd").metric_value({"em": 1.0, "f1": 3.0}) == 3.0
    assert get_task("xnli").metric_value({"accuracy": 77.0}) == 77.0


def test_thucnews_with_other_classes(tmp_path):
    classes = tmp_path / "my-classes.txt"
    classes.write_text("体育\n财经\n娱乐\n", encoding="utf-8")
    data = tmp_path / "news.txt"
    data.write_text("球赛\t0\n股市\t1\n电影\t2\n", encoding="utf-8")
    task = with_classes(get_task("thucnews"), classes)
    assert task.labels == ("体育", "财经", "娱乐") and get_task("thucnews").labels[0] == "finance"
    assert [e.label for e in task.read(data)] == ["体育", "财经", "娱乐"]
    assert with_classes(get_task("thucnews"), None) is get_task("thucnews")
    with pytest.raises(UserError, match="--classes is for thucnews"):
        with_classes(get_task("lcqmc"), classes)


def test_every_entry_carries_every_field():
    """A task is data: reader, writer, head, scorer, prediction layout and version are in its entry."""
    from bertwwm.tasks.heads import head_class
    from bertwwm.tasks.readers import PREDICTION_FORMATS, PredictionFormat

    for name, task in TASKS.items():
        assert task.name == name and task.title and task.kind in ("classification", "mrc", "cjrc")
        assert set(task.files) == {"train", "dev", "test"} and all(task.files.values())
        assert callable(task.read) and callable(task.write) and callable(task.scorer)
        assert task.data_suffix.startswith(".") and task.metric
        assert isinstance(task.predictions, PredictionFormat) and PREDICTION_FORMATS[task.prediction_format] is \
            task.predictions and task.prediction_suffix in (".json", ".tsv")
        assert callable(task.predictions.write) and callable(task.predictions.read)
        assert hasattr(head_class(task), "from_pretrained"), task.head
        assert task.main_metric in task.report_metrics
        assert isinstance(task.version, int) and task.version >= 1
        assert task.learning_rate > 0 and task.epochs > 0 and task.batch_size > 0 and task.max_seq_length >= 16
        assert bool(task.labels) != task.is_mrc  # classifiers name their labels; MRC tasks have none
    assert [t.name for t in TASKS.values() if t.indexed_labels] == ["thucnews"]


def _write_senti(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.tsv").write_text("label\ttext_a\n" + "".join(f"{y}\t{x}\n" for y, x in rows), encoding="utf-8")
    return folder / "train.tsv"


NINTH_ROWS = [("1", "服务很好，早餐丰富"), ("0", "房间太小，隔音差"), ("1", "位置方便，价格合理"), ("0", "前台态度冷淡"),
              ("1", "干净舒适"), ("0", "空调坏了没人修"), ("1", "下次还来"), ("0", "不推荐")]


@pytest.fixture
def ninth_task(monkeypatch):
    """A ninth benchmark registered the one way a new task is: a copy of chnsenticorp's entry under another
    name. Nothing else is patched."""
    import dataclasses

    task = dataclasses.replace(TASKS["chnsenticorp"], name="hotel_senti", title="Hotel reviews",
                               files={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"})
    monkeypatch.setitem(TASKS, task.name, task)
    return task


def test_a_ninth_task_runs_through_the_registry_paths(ninth_task, tmp_path, capsys):
    from bertwwm import cli
    from bertwwm.finetune import default_settings, resolve_files, score
    from bertwwm.finetune.evaluate import evaluate_files
    from bertwwm.report import summarize

    _write_senti(tmp_path / "tasks" / "hotel_senti", NINTH_ROWS)
    task = get_task("Hotel-Senti")
    assert task is ninth_task
    # read: found in DATA_DIR/<name>/ by the entry's file names, and split (it has no dev file) in its format
    settings = resolve_files(task, default_settings(task, "m"), tmp_path / "tasks", tmp_path / "run")
    assert settings.train == str(tmp_path / "run/data/train.tsv")
    assert "hotel_senti has only train.tsv" in settings.split_note
    dev = task.read(settings.dev)
    assert len(task.read(settings.train)) + len(dev) == 8 and {e.label for e in dev} <= {"0", "1"}
    # predictions: the entry's layout and suffix; score: the entry's metric, directly and through evaluate
    predictions = ["1"] * len(dev)
    path = tmp_path / f"dev_predictions{task.prediction_suffix}"
    task.predictions.write(path, predictions)
    expected = 100.0 * sum(e.label == "1" for e in dev) / len(dev)
    assert score(task, dev, predictions) == {"accuracy": expected, "total": len(dev), "skip": 0}
    assert evaluate_files("hotel_senti", settings.dev, path) == score(task, dev, predictions)
    assert cli.main(["evaluate", "hotel_senti", "--gold", settings.dev, "--predictions", str(path)]) == 0
    assert '"accuracy": ' in capsys.readouterr().out
    record = {"task": "hotel_senti", "model": "m", "seed": 1, "dev": score(task, dev, predictions)}
    assert summarize([record])["dev"]["accuracy"]["max"] == expected


def test_a_ninth_task_with_its_own_metric(ninth_task, tmp_path, monkeypatch):
    """A new metric is a scorer(examples, predictions) in the entry; evaluate and report follow it."""
    import dataclasses

    from bertwwm.finetune.evaluate import evaluate_files
    from bertwwm.report import render_tables, summarize

    def macro_f1(gold, predictions) -> dict:
        f1s = []
        for label in ("0", "1"):
            tp = sum(e.label == label == p for e, p in zip(gold, predictions))
            fp = sum(e.label != label == p for e, p in zip(gold, predictions))
            fn = sum(p != label == e.label for e, p in zip(gold, predictions))
            f1s.append(200.0 * tp / max(1, 2 * tp + fp + fn))
        return {"macro_f1": sum(f1s) / len(f1s), "total": len(gold)}

    task = dataclasses.replace(ninth_task, scorer=macro_f1, metric="macro_f1", main_metric=("macro_f1",),
                               report_metrics=(("macro_f1",),))
    monkeypatch.setitem(TASKS, task.name, task)
    gold = _write_senti(tmp_path, NINTH_ROWS)
    path = tmp_path / f"p{task.prediction_suffix}"
    task.predictions.write(path, ["1"] * 8)
    scores = evaluate_files(task.name, gold, path)
    assert scores == {"macro_f1": (200 / 3 + 0) / 2, "total": 8}
    record = {"task": task.name, "model": "m", "seed": 1, "dev": scores, "dev_score": task.metric_value(scores)}
    assert "| m | 1 | 33.3 (33.3) | 0.00 |" in render_tables([("m", summarize([record]))])


def test_a_ninth_task_fine_tunes_end_to_end(ninth_task, tmp_path, private_cache):
    """The runner itself has no per-task code: the copied entry trains, predicts and scores under its name."""
    import json

    from bertwwm.finetune import finetune

    _write_senti(tmp_path / "tasks" / "hotel_senti", NINTH_ROWS * 4)
    out = tmp_path / "run"
    [record] = finetune("hotel_senti", "random:tiny", out, seeds=1, data_dir=tmp_path / "tasks", progress=False,
                        save_model=False, epochs=1, batch_size=8, max_seq_length=32)
    assert record["task"] == "hotel_senti" and record["task_version"] == ninth_task.version
    assert record["dev"]["total"] == 6 and record["dev_score"] == record["dev"]["accuracy"]
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["task"] == "hotel_senti"
    predictions = ninth_task.predictions.read(out / f"seed-1/dev_predictions{ninth_task.prediction_suffix}")
    assert len(predictions) == 6 and set(predictions) <= {"0", "1"}
