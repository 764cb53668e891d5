"""Fine-tuning settings: one schema for the Python keywords, the command-line flags and DIR/run.json.

`Settings` holds everything that defines a run. Its field names are the keywords of
`finetune(task, model, out, **overrides)` and the keys of DIR/run.json; a field whose metadata names a flag
is also a `bertwwm finetune` option, with the help given here (finetune/cli.py places the flags). Unset
fields take the task's defaults (its registry entry) and, for learning rate and epochs, bertwwm's defaults
by model width.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from bertwwm.core.errors import UserError
from bertwwm.tasks.registry import Task


def flag(name: str, help: str | None = None, **argparse_options) -> dict:
    """Field metadata making a setting the command-line option `name` (argparse options: metavar, choices)."""
    return {"flag": name, "help": help, **argparse_options}


@dataclass
class Settings:
    """Everything that defines a run; stored in DIR/run.json and checked when a run resumes."""

    task: str
    model: str
    learning_rate: float = field(metadata=flag(
        "--lr", "default: the report's best for the task (BERT-base and larger); smaller models get bertwwm's "
                "defaults by model size (docs/finetune.md)"))
    epochs: float = field(metadata=flag("--epochs"))
    batch_size: int = field(metadata=flag("--batch-size"))
    max_seq_length: int = field(metadata=flag("--max-seq-length"))
    doc_stride: int = field(metadata=flag("--doc-stride", "MRC: context tokens between window starts"))
    max_query_length: int
    max_answer_length: int = field(metadata=flag("--max-answer-length", "MRC: longest answer in tokens"))
    warmup_proportion: float = field(default=0.1, metadata=flag("--warmup-proportion", "default 0.1"))
    weight_decay: float = 0.01
    gradient_accumulation: int = field(default=1, metadata=flag("--gradient-accumulation",
                                                                "split each batch into N micro-batches"))
    long_text: str = field(default="truncate", metadata=flag(
        "--long-text", "classification of long texts (THUCNews articles): truncate to --max-seq-length "
                       "(default), or cut windows --doc-stride apart and average their logits",
        choices=("truncate", "window")))
    max_train_examples: int | None = field(default=None, metadata=flag(
        "--max-train-examples", "train on a stratified sample of N examples (by label; CJRC by domain, MRC by "
                                "article; the same sample for every seed and model)", metavar="N"))
    max_eval_examples: int | None = field(default=None, metadata=flag(
        "--max-eval-examples", "score a stratified sample of N dev/test examples (as --max-train-examples)",
        metavar="N"))
    train: str | None = field(default=None, metadata=flag("--train", "train file (overrides --data-dir)"))
    dev: str | None = field(default=None, metadata=flag("--dev", "dev file (overrides --data-dir)"))
    test: str | None = field(default=None, metadata=flag("--test", "test file (overrides --data-dir)"))
    split_note: str | None = None  # set when a single-file task was split into train and dev
    extra: dict = field(default_factory=dict)  # where the defaults came from, THUCNews' classes, ...


def flagged_settings() -> dict[str, dataclasses.Field]:
    """The settings that are command-line options, by field name, in field order."""
    return {f.name: f for f in dataclasses.fields(Settings) if "flag" in f.metadata}


def add_setting_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add the options of the named settings. Each defaults to None, which means "the task's default"."""
    fields, hints = flagged_settings(), typing.get_type_hints(Settings)
    for name in names:
        options = dict(fields[name].metadata)
        option = options.pop("flag")
        if options["help"] is None:
            del options["help"]
        parser.add_argument(option, dest=name, type=_argument_type(hints[name]), **options)


def _argument_type(hint) -> type | None:
    """int or float for numbers (also `int | None`); None (argparse's plain strings) otherwise."""
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return kinds[0] if kinds[0] in (int, float) else None


# Learning rate and epochs by model width, used when --lr / --epochs are not given. The report's values (the
# task registry's) are for BERT-base and larger; a 2-layer, 128-wide model fine-tuned with them stays near the
# majority class. Measured on dev sets with `--lr-grid` (docs/finetune.md, "Defaults by model size").
SIZE_DEFAULTS: tuple[tuple[int, dict[str, tuple[float, float]]], ...] = (
    # (largest hidden size, {task kind: (learning rate, epochs)})
    (128, {"classification": (1e-3, 3.0), "mrc": (1e-3, 3.0), "cjrc": (1e-3, 3.0)}),
    (256, {"classification": (3e-4, 3.0), "mrc": (3e-4, 3.0), "cjrc": (3e-4, 3.0)}),
    (512, {"classification": (1e-4, 3.0), "mrc": (1e-4, 2.0), "cjrc": (1e-4, 2.0)}),
)


def size_defaults(task: Task, hidden_size: int | None) -> tuple[float, float, str]:
    """(learning rate, epochs, where they come from) for a model of this width on this task."""
    for limit, table in SIZE_DEFAULTS:
        if hidden_size is not None and hidden_size <= limit:
            lr, epochs = table[task.kind]
            return lr, epochs, f"bertwwm's defaults for models of hidden size <= {limit}"
    return task.learning_rate, task.epochs, "the report's hyper-parameters for the task"


def default_settings(task: Task, model: str, hidden_size: int | None = None, **overrides) -> Settings:
    """The settings of a run: `overrides` (any Settings field; None means unset) over the defaults."""
    lr, epochs, source = size_defaults(task, hidden_size)
    values = dict(task=task.name, model=model, learning_rate=lr, epochs=epochs,
                  batch_size=task.batch_size, max_seq_length=task.max_seq_length, doc_stride=task.doc_stride,
                  max_query_length=task.max_query_length, max_answer_length=task.max_answer_length)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    values.setdefault("extra", {})
    if "learning_rate" not in given or "epochs" not in given:
        values["extra"] = {**values["extra"], "defaults_from": source}
    s = Settings(**values)
    if s.learning_rate <= 0 or s.epochs <= 0 or s.batch_size <= 0 or s.max_seq_length < 16:
        raise UserError("learning rate, epochs and batch size must be positive and max length at least 16")
    if s.batch_size % s.gradient_accumulation:
        raise UserError("--batch-size must be a multiple of --gradient-accumulation")
    return s
