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
