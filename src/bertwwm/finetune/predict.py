"""`bertwwm predict TASK --model DIR --input FILE [--out FILE]`: run a fine-tuned model on new data.

DIR is a model folder written by `bertwwm finetune` (DIR/best-model); it carries bertwwm_task.json with the
task and the settings it was trained with (max length, doc stride, answer length). FILE is in the task's
own format; labels or answers may be absent. The predictions are written in the official submission layout
(see `bertwwm evaluate`), to --out or to stdout.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from bertwwm.core.errors import UserError
from bertwwm.tasks.registry import CLASSIFICATION, Task, get_task, with_classes


def predict(task: str | Task, model: str | Path, input: str | Path, out: str | Path | None = None,
            batch_size: int = 64, device: str | None = None, progress: bool = False,
            classes: str | Path | None = None):
    """Predictions for FILE: {question id: answer} for MRC, a list of labels for classification.

    The labels are the model's own (stored in its config at fine-tuning); THUCNews' `classes` (a class.txt)
    renames them, e.g. for an input file that indexes the same classes under other names.
    """
    from bertwwm.finetune.encoding import Encoded
    from bertwwm.finetune.loop import pick_device, predict_examples
    from bertwwm.finetune.settings import Settings
    from bertwwm.tasks.heads import load_finetuned

    task = get_task(task) if isinstance(task, str) else task
    net, tokenizer, saved = load_finetuned(model, task)
    if task.kind == CLASSIFICATION:
        trained = tuple(net.config.id2label[i] for i in range(net.config.num_labels))
        if classes is None and task.indexed_labels and trained != task.labels:
            classes = trained  # a model fine-tuned with --classes
        task = with_classes(task, classes)
        if len(task.labels) != len(trained):
            raise UserError(f"{len(task.labels)} classes given, but the model was fine-tuned for "
                            f"{len(trained)}: {', '.join(trained)}", classes)
    settings = Settings(**{f.name: saved[f.name] for f in fields(Settings) if f.name in saved})
    examples = task.read(input, require_labels=False)
    dev = pick_device(device)
    net.to(dev)
    preds = predict_examples(task, net, Encoded(task, examples, tokenizer, settings), settings, batch_size, dev,
                             progress)
    if out is not None:
        task.predictions.write(out, preds)
    return preds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.tasks.registry import TASKS

    parser.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--model", required=True, help="fine-tuned model folder (RUN/best-model)")
    parser.add_argument("--input", required=True, help="examples in the task's format, at any path")
    parser.add_argument("--out", help="predictions file (default: print to stdout)")
    parser.add_argument("--classes", metavar="FILE",
                        help="thucnews: class names, one per line (default: the model's own classes)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (shown by default when writing to --out)")


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    progress = args.out is not None and not args.no_progress
    if not progress:
        from bertwwm.finetune.cli import quiet_progress_bars

        quiet_progress_bars()
    preds = predict(task, args.model, args.input, args.out, args.batch_size, args.device, progress=progress,
                    classes=args.classes)
    if args.out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the same writer as for files, so stdout is the same layout
            path = Path(tmp) / "predictions"
            task.predictions.write(path, preds)
            sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0
