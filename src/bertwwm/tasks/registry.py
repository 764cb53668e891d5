"""The eight benchmarks as data: file names, reader, head, metric and the report's fine-tuning defaults.

Learning rates are the best ones of the report's seed table (Cui et al. 2019, BERT and the wwm models);
max length, batch size and epochs follow its hyper-parameter table (512 for reading comprehension and
THUCNews, batch 64 throughout -- the report's FAQ stresses that a larger batch matters).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bertwwm.core.errors import UserError
from bertwwm.tasks import readers

CLASSIFICATION, MRC, CJRC = "classification", "mrc", "cjrc"
THUCNEWS_CLASSES = readers.THUCNEWS_CLASSES


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    kind: str  # classification | mrc | cjrc
    files: dict[str, str]  # split -> file name in the task folder (the official release's names)
    read: Callable[..., list]  # read(path, require_labels=True) -> examples
    metric: str  # accuracy | cmrc2018 | cjrc
    main_metric: tuple[str, ...]  # path into the metric dict used for "best seed" and reports
    report_metrics: tuple[tuple[str, ...], ...]  # columns of the report table
    learning_rate: float
    epochs: float
    batch_size: int = 64
    max_seq_length: int = 128
    labels: tuple[str, ...] = ()
    pair: bool = False
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    prediction_format: str = "tsv"  # tsv | squad | cjrc
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # Bumped when what a run of the task computes changes (reader, metric, defaults): results.jsonl records it,
    # so scores from different versions are not mixed up.
    version: int = 1

    @property
    def is_mrc(self) -> bool:
        return self.kind in (MRC, CJRC)

    def metric_value(self, metrics: dict) -> float:
        value = metrics
        for key in self.main_metric:
            value = value[key]
        return float(value)


def _table(fields: tuple[str, ...], labels: tuple[str, ...]):
    def read(path, require_labels: bool = True):
        return readers.read_table(path, fields, labels, require_label=require_labels)
    return read


def _thucnews(path, require_labels: bool = True, classes: tuple[str, ...] | None = None):
    return readers.read_thucnews(path, classes, require_label=require_labels)


def _squad(path, require_labels: bool = True):
    return readers.read_squad(path, require_answers=require_labels)


def _cjrc(path, require_labels: bool = True):
    return readers.read_cjrc(path, require_answers=require_labels)


_ACC = (("accuracy",),)
TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cmrc2018", "CMRC 2018", MRC, {"train": "train.json", "dev": "dev.json", "test": "test.json"},
         _squad, "cmrc2018", ("f1",), (("em",), ("f1",)), 3e-5, 2, max_seq_length=512,
         prediction_format="squad", notes="span extraction, simplified Chinese, SQuAD v1 JSON"),
    Task("drcd", "DRCD", MRC,
         {"train": "DRCD_training.json", "dev": "DRCD_dev.json", "test": "DRCD_test.json"},
         _squad, "cmrc2018", ("f1",), (("em",), ("f1",)), 3e-5, 2, max_seq_length=512,
         prediction_format="squad", notes="span extraction, traditional Chinese; scored with the CMRC 2018 script"),
    Task("cjrc", "CJRC", CJRC, {"train": "train.json", "dev": "dev.json", "test": "test.json"},
         _cjrc, "cjrc", ("overall", "f1"), (("overall", "em"), ("overall", "f1")), 4e-5, 2,
         max_seq_length=512, max_answer_length=64, prediction_format="cjrc",
         notes="legal MRC: spans, YES, NO and unanswerable; civil and criminal domains"),
    Task("xnli", "XNLI", CLASSIFICATION, {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
         _table(("text_a", "text_b", "label"), ("entailment", "neutral", "contradiction")), "accuracy",
         ("accuracy",), _ACC, 3e-5, 2, labels=("entailment", "neutral", "contradiction"), pair=True,
         notes="natural language inference, 3 classes"),
    Task("chnsenticorp", "ChnSentiCorp", CLASSIFICATION,
         {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
         _table(("label", "text_a"), ("0", "1")), "accuracy", ("accuracy",), _ACC, 2e-5, 3, max_seq_length=256,
         labels=("0", "1"), notes="sentiment, 2 classes"),
    Task("lcqmc", "LCQMC", CLASSIFICATION, {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
         _table(("text_a", "text_b", "label"), ("0", "1")), "accuracy", ("accuracy",), _ACC, 2e-5, 3,
         labels=("0", "1"), pair=True, notes="question matching (sentence pairs), 2 classes"),
    Task("bq_corpus", "BQ Corpus", CLASSIFICATION, {"train": "train.csv", "dev": "dev.csv", "test": "test.csv"},
         _table(("text_a", "text_b", "label"), ("0", "1")), "accuracy", ("accuracy",), _ACC, 3e-5, 3,
         labels=("0", "1"), pair=True, notes="bank question matching (sentence pairs), 2 classes"),
    Task("thucnews", "THUCNews", CLASSIFICATION, {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"},
         _thucnews, "accuracy", ("accuracy",), _ACC, 2e-5, 3, max_seq_length=512, labels=THUCNEWS_CLASSES,
         notes="document classification, 10 classes (title<TAB>label index; --classes FILE for others)"),
]}
ALIASES = {"cmrc": "cmrc2018", "bq": "bq_corpus", "chnsenti": "chnsenticorp"}


def get_task(name: str) -> Task:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise UserError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


def task_file(task: Task, split: str, data_dir: str | Path | None) -> Path | None:
    """DATA_DIR/<task>/<official file name> for a split, or None when that file is not there."""
    if data_dir is None:
        return None
    path = Path(data_dir) / task.name / task.files[split]
    return path if path.is_file() else None


def with_classes(task: Task, classes: str | Path | Sequence[str] | None) -> Task:
    """`task` reading its label indexes as `classes`: a class file (one name per line, line i naming index i),
    or the names themselves. Only THUCNews files hold class indexes; its default is the official ten."""
    if classes is None:
        return task
    if task.name != "thucnews":
        raise UserError(f"--classes is for thucnews (whose files hold class indexes), not {task.name}")
    names = readers.read_class_file(classes) if isinstance(classes, (str, Path)) else tuple(classes)
    return dataclasses.replace(task, labels=names, read=functools.partial(_thucnews, classes=names))
