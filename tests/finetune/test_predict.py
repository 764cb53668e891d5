"""`bertwwm predict`: a fine-tuned folder runs on new data (no labels needed) in the official layouts."""

from __future__ import annotations

import json

import pytest

from bertwwm import cli, finetune as ft
from bertwwm.finetune.predict import predict
from bertwwm.tasks import readers


@pytest.fixture(scope="module")
def senti_run(tmp_path_factory, resources):
    from tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("predict")
    model = make_tiny_model(root / "tiny", layers=1, hidden=64)
    dev = root / "dev.tsv"
    lines = (resources / "tasks/chnsenticorp/dev.tsv").read_text(encoding="utf-8").splitlines()
    dev.write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    ft.finetune("chnsenticorp", model, root / "run", seeds=1, train=str(resources / "tasks/chnsenticorp/train.tsv"),
                dev=str(dev), progress=False, max_seq_length=48, batch_size=16, epochs=1, learning_rate=5e-4,
                max_train_examples=64)
    return root, dev


def test_predict_matches_the_runs_dev_predictions(senti_run, tmp_path):
    root, dev = senti_run
    unlabeled = tmp_path / "new.tsv"
    unlabeled.write_text("".join(e.text_a + "\n" for e in readers.read_table(dev, ("label", "text_a"))),
                         encoding="utf-8")
    preds = predict("chnsenticorp", root / "run/best-model", unlabeled, tmp_path / "p.tsv")
    assert len(preds) == 40 and set(preds) <= {"0", "1"}
    assert (tmp_path / "p.tsv").read_text() == (root / "run/seed-1/dev_predictions.tsv").read_text()


def test_cli_stdout_and_errors(senti_run, tmp_path, capsys):
    root, dev = senti_run
    assert cli.main(["predict", "chnsenticorp", "--model", str(root / "run/best-model"), "--input", str(dev)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "index\tprediction" and len(out) == 41
    assert cli.main(["predict", "xnli", "--model", str(root / "run/best-model"), "--input", str(dev)]) == 2
    assert "fine-tuned for chnsenticorp, not xnli" in capsys.readouterr().err
    assert cli.main(["predict", "chnsenticorp", "--model", str(root / "tiny"), "--input", str(dev)]) == 2
    assert "not a fine-tuned model folder" in capsys.readouterr().err


def test_mrc_prediction_on_questions_without_answers(tmp_path, shared_data):
    from tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny", layers=1, hidden=64)
    examples = readers.read_squad(shared_data / "tasks/drcd/DRCD_dev.json")[:40]
    readers.write_mrc(tmp_path / "train.json", examples)
    ft.finetune("drcd", model, tmp_path / "run", seeds=1, train=str(tmp_path / "train.json"),
                dev=str(tmp_path / "train.json"), progress=False, max_seq_length=128, batch_size=8, epochs=1,
                learning_rate=5e-4)
    for e in examples:
        e.answers = []
    readers.write_mrc(tmp_path / "new.json", examples)
    assert cli.main(["predict", "drcd", "--model", str(tmp_path / "run/best-model"), "--input",
                     str(tmp_path / "new.json"), "--out", str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert set(preds) == {e.qid for e in examples}
    by_id = {e.qid: e for e in examples}
    # every answer is a verbatim piece of its (traditional Chinese) context
    assert all(text in by_id[qid].context for qid, text in preds.items())
    assert preds == json.loads((tmp_path / "run/seed-1/dev_predictions.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------- official test files at any path

OFFICIAL = {  # task -> the shared file whose official layout the slice keeps
    "cmrc2018": "cmrc2018/dev.json", "drcd": "drcd/DRCD_dev.json", "cjrc": "cjrc/dev.json",
    "xnli": "xnli/dev.tsv", "chnsenticorp": "chnsenticorp/test.tsv", "lcqmc": "lcqmc/dev.txt",
    "bq_corpus": "bq_corpus/dev.csv", "thucnews": "thucnews/dev.txt"}


def official_slice(task: str, shared_data, folder) -> "Path":
    """A few examples of a task's official file, byte for byte in its layout (header or none, the BQ BOM,
    the SQuAD / CJRC JSON records), under a name and folder the task's official files never have: no
    class.txt or any other file beside it."""
    from pathlib import Path

    source = shared_data / "tasks" / OFFICIAL[task]
    target = Path(folder) / "somewhere else" / f"my {task} test{source.suffix}"
    target.parent.mkdir(parents=True)
    if source.suffix == ".json":
        data = json.loads(source.read_text(encoding="utf-8"))
        if task == "cjrc":  # one case of each domain
            records = [next(r for r in data["data"] if r["domain"] == d) for d in ("civil", "criminal")]
        else:
            records = data["data"][:3]
        target.write_text(json.dumps({**data, "data": records}, ensure_ascii=False, indent=2), encoding="utf-8")
        return target
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)  # "utf-8" keeps BQ's BOM in line 0
    header = lines[:1] if task in ("xnli", "chnsenticorp", "bq_corpus") else []
    body = lines[len(header):]
    target.write_text("".join(header + body[::len(body) // 30][:30]), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def tinier(tmp_path_factory):
    from tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tinier"), layers=1, hidden=32)


@pytest.mark.parametrize("task", list(OFFICIAL))
def test_official_test_file_at_any_path_through_finetune_predict_and_evaluate(task, tinier, tmp_path, shared_data,
                                                                                capsys):
    from bertwwm.tasks.registry import get_task

    test = official_slice(task, shared_data, tmp_path)
    run = tmp_path / "run"
    mrc = get_task(task).is_mrc
    assert cli.main(["finetune", task, "--model", tinier, "--out", str(run), "--seeds", "1", "--train", str(test),
                     "--dev", str(test), "--test", str(test), "--epochs", "1", "--batch-size", "8", "--lr", "1e-4",
                     "--max-seq-length", "128" if mrc else "48", "--doc-stride", "64", "--no-progress"]) == 0
    record = json.loads((run / "results.jsonl").read_text(encoding="utf-8"))
    suffix = ".json" if mrc else ".tsv"
    assert cli.main(["predict", task, "--model", str(run / "best-model"), "--input", str(test),
                     "--out", str(tmp_path / f"p{suffix}"), "--no-progress"]) == 0
    assert (tmp_path / f"p{suffix}").read_text(encoding="utf-8") == \
        (run / f"seed-1/test_predictions{suffix}").read_text(encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["evaluate", task, "--gold", str(test), "--predictions", str(tmp_path / f"p{suffix}")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores == record["test"]
    examples = get_task(task).read(test)
    total = scores["overall"]["qas"] if task == "cjrc" else scores["total"]
    assert total == len(examples) >= 6 and scores.get("skip", 0) == 0
    if task == "cjrc":
        assert scores["civil"]["qas"] > 0 and scores["criminal"]["qas"] > 0
    if not mrc:
        assert len({e.label for e in examples}) >= 2  # a slice across classes, not one block


def test_thucnews_with_its_own_classes_file(tinier, tmp_path, capsys):
    classes = tmp_path / "classes" / "names.txt"
    classes.parent.mkdir()
    classes.write_text("体育\n财经\n娱乐\n", encoding="utf-8")
    data = tmp_path / "data" / "news.txt"
    data.parent.mkdir()
    titles = ["球队赢了决赛", "股市今日大涨", "新电影票房破纪录", "篮球联赛开幕", "银行利率下调", "明星举办演唱会"]
    data.write_text("".join(f"{t}\t{i % 3}\n" for i, t in enumerate(titles * 3)), encoding="utf-8")
    run = tmp_path / "run"
    assert cli.main(["finetune", "thucnews", "--model", tinier, "--out", str(run), "--seeds", "1", "--train",
                     str(data), "--dev", str(data), "--classes", str(classes), "--epochs", "1", "--batch-size", "8",
                     "--max-seq-length", "32", "--no-progress"]) == 0
    assert json.loads((run / "run.json").read_text(encoding="utf-8"))["extra"]["classes"] == ["体育", "财经", "娱乐"]
    capsys.readouterr()
    # predict reads the model's own classes; no class file needed beside the input
    assert cli.main(["predict", "thucnews", "--model", str(run / "best-model"), "--input", str(data),
                     "--out", str(tmp_path / "p.tsv")]) == 0
    predicted = readers.read_predictions(tmp_path / "p.tsv", "tsv")
    assert len(predicted) == 18 and set(predicted) <= {"体育", "财经", "娱乐"}
    assert cli.main(["evaluate", "thucnews", "--gold", str(data), "--predictions", str(tmp_path / "p.tsv"),
                     "--classes", str(classes)]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 18
    # the official ten do not fit this model's three outputs
    assert cli.main(["evaluate", "thucnews", "--gold", str(data), "--predictions", str(tmp_path / "p.tsv")]) == 2
    assert "not labels of thucnews" in capsys.readouterr().err
