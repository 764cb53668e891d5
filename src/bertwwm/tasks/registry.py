"""The eight benchmarks as data: one registry entry per task, carrying everything the runner needs.

An entry names the task's files, its reader and writer (the official file format), the model head, the
official metric (scorer), the prediction file layout (writer, reader, suffix), the report's fine-tuning
defaults and a version. `finetune`, `evaluate`, `predict` and `report` read these fields and hold no
per-task code, so a ninth benchmark is one entry here plus its reader (and its metric, if new).

Learning rates are the best ones of the report's seed table (Cui et al. 2019, BERT and the wwm models);
max length, batch size and epochs follow its hyper-parameter table (512 for reading comprehension and
THUCNews, batch 64 throughout -- the report's FAQ stresses that a larger batch matters).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bertwwm.core.errors import UserError
import bertwwm.tasks.metrics as metrics  # the modules, not through the package (its __init__ imports this one)
import bertwwm.tasks.readers as readers
from bertwwm.tasks.readers import CJRC_PREDICTIONS, SQUAD_PREDICTIONS, TSV_PREDICTIONS, PredictionFormat

CLASSIFICATION, MRC, CJRC = "classification", "mrc", "cjrc"
THUCNEWS_CLASSES = readers.THUCNEWS_CLASSES

# Heads as "module:Class", imported only when a model is built (tasks/heads.py), so that reading the
# registry (`bertwwm report`, `--help`) loads neither torch nor transformers.
SEQUENCE_CLASSIFIER = "transformers:BertForSequenceClassification"
SPAN_EXTRACTOR = "transformers:BertForQuestionAnswering"
CJRC_HEAD = "bertwwm.tasks.heads:BertForCJRC"


@dataclass(frozen=True)
class Task:
    """One benchmark. `kind` says how examples become model inputs and logits become predictions
    (classification | mrc | cjrc); everything else that differs between tasks is a field."""

    name: str
    title: str
    kind: str
    files: dict[str, str]  # split -> file name in the task folder (the official release's names)
    read: Callable[..., list]  # read(path, require_labels=True) -> examples
    write: Callable[[str | Path, Sequence, tuple[str, ...]], None]  # write(path, examples, labels), what read reads
    data_suffix: str  # suffix of the files `write` writes (a single-file task's train/dev split)
    head: str  # "module:Class" of the transformers model with the task's head
    scorer: Callable[[Sequence, Any], dict]  # the official metric: scorer(examples, predictions) -> metrics
    metric: str  # the metric's name: accuracy | cmrc2018 | cjrc
    main_metric: tuple[str, ...]  # path into the metric dict used for "best seed" and reports
    report_metrics: tuple[tuple[str, ...], ...]  # columns of the report table
    predictions: PredictionFormat  # the official submission layout: writer, reader, file suffix
    learning_rate: float
    epochs: float
    batch_size: int = 64
    max_seq_length: int = 128
    labels: tuple[str, ...] = ()
    indexed_labels: bool = False  # files hold label indexes, named by the labels (or --classes FILE)
    pair: bool = False
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # Bumped when what a run of the task computes changes (reader, metric, defaults): results.jsonl records it,
    # so scores from different versions are not mixed up.
    version: int = 1

    @property
    def is_mrc(self) -> bool:
        return self.kind in (MRC, CJRC)

    @property
    def prediction_format(self) -> str:
        return self.predictions.name

    @property
    def prediction_suffix(self) -> str:
        return self.predictions.suffix

    def metric_value(self, metrics: dict) -> float:
        value = metrics
        for key in self.main_metric:
            value = value[key]
        return float(value)


def _table(fields: tuple[str, ...], labels: tuple[str, ...]):
    def read(path, require_labels: bool = True):
        return readers.read_table(path, fields, labels, require_label=require_labels)
    return read


def _write_table(path, examples, labels=()):
    readers.write_table(path, examples)


def _thucnews(path, require_labels: bool = True, classes: tuple[str, ...] | None = None):
    return readers.read_thucnews(path, classes, require_label=require_labels)


def _squad(path, require_labels: bool = True):
    return readers.read_squad(path, require_answers=require_labels)


def _write_squad(path, examples, labels=()):
    readers.write_mrc(path, examples)


def _cjrc(path, require_labels: bool = True):
    return readers.read_cjrc(path, require_answers=require_labels)


def _write_cjrc(path, examples, labels=()):
    readers.write_mrc(path, examples, cjrc=True)


# What the tasks of one kind share; an entry spells out the rest (and may override any of these).
_CLASSIFIER = dict(kind=CLASSIFICATION, write=_write_table, data_suffix=".tsv", head=SEQUENCE_CLASSIFIER,
                   scorer=metrics.accuracy_scores, metric="accuracy", main_metric=("accuracy",),
                   report_metrics=(("accuracy",),), predictions=TSV_PREDICTIONS)
_SPANS = dict(kind=MRC, read=_squad, write=_write_squad, data_suffix=".json", head=SPAN_EXTRACTOR,
              scorer=metrics.cmrc2018_scores, metric="cmrc2018", main_metric=("f1",),
              report_metrics=(("em",), ("f1",)), predictions=SQUAD_PREDICTIONS, max_seq_length=512)
_SPLITS = ("train", "dev", "test")


def _files(*names: str) -> dict[str, str]:
    return dict(zip(_SPLITS, names))


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cmrc2018", "CMRC 2018", files=_files("train.json", "dev.json", "test.json"), learning_rate=3e-5,
         epochs=2, notes="span extraction, simplified Chinese, SQuAD v1 JSON", **_SPANS),
    Task("drcd", "DRCD", files=_files("DRCD_training.json", "DRCD_dev.json", "DRCD_test.json"), learning_rate=3e-5,
         epochs=2, notes="span extraction, traditional Chinese; scored with the CMRC 2018 script", **_SPANS),
    Task("cjrc", "CJRC", kind=CJRC, files=_files("train.json", "dev.json", "test.json"), read=_cjrc,
         write=_write_cjrc, data_suffix=".json", head=CJRC_HEAD, scorer=metrics.cjrc_scores, metric="cjrc",
         main_metric=("overall", "f1"), report_metrics=(("overall", "em"), ("overall", "f1")),
         predictions=CJRC_PREDICTIONS, learning_rate=4e-5, epochs=2, max_seq_length=512, max_answer_length=64,
         notes="legal MRC: spans, YES, NO and unanswerable; civil and criminal domains"),
    Task("xnli", "XNLI", files=_files("train.tsv", "dev.tsv", "test.tsv"),
         read=_table(("text_a", "text_b", "label"), ("entailment", "neutral", "contradiction")),
         labels=("entailment", "neutral", "contradiction"), pair=True, learning_rate=3e-5, epochs=2,
         notes="natural language inference, 3 classes", **_CLASSIFIER),
    Task("chnsenticorp", "ChnSentiCorp", files=_files("train.tsv", "dev.tsv", "test.tsv"),
         read=_table(("label", "text_a"), ("0", "1")), labels=("0", "1"), learning_rate=2e-5, epochs=3,
         max_seq_length=256, notes="sentiment, 2 classes", **_CLASSIFIER),
    Task("lcqmc", "LCQMC", files=_files("train.txt", "dev.txt", "test.txt"),
         read=_table(("text_a", "text_b", "label"), ("0", "1")), labels=("0", "1"), pair=True, learning_rate=2e-5,
         epochs=3, notes="question matching (sentence pairs), 2 classes", **_CLASSIFIER),
    Task("bq_corpus", "BQ Corpus", files=_files("train.csv", "dev.csv", "test.csv"),
         read=_table(("text_a", "text_b", "label"), ("0", "1")), labels=("0", "1"), pair=True, learning_rate=3e-5,
         epochs=3, notes="bank question matching (sentence pairs), 2 classes", **_CLASSIFIER),
    Task("thucnews", "THUCNews", files=_files("train.txt", "dev.txt", "test.txt"), read=_thucnews,
         labels=THUCNEWS_CLASSES, indexed_labels=True, learning_rate=2e-5, epochs=3, max_seq_length=512,
         notes="document classification, 10 classes (title<TAB>label index; --classes FILE for others)",
         **dict(_CLASSIFIER, write=readers.write_thucnews, data_suffix=".txt")),
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
    or the names themselves. Only tasks with indexed_labels (THUCNews) read class indexes; their reader takes
    the names as `classes`."""
    if classes is None:
        return task
    if not task.indexed_labels:
        indexed = ", ".join(t.name for t in TASKS.values() if t.indexed_labels)
        raise UserError(f"--classes is for {indexed} (whose files hold class indexes), not {task.name}")
    names = readers.read_class_file(classes) if isinstance(classes, (str, Path)) else tuple(classes)
    return dataclasses.replace(task, labels=names, read=functools.partial(task.read, classes=names))
