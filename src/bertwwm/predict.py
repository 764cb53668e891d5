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

from bertwwm.tasks import readers
from bertwwm.tasks.registry import Task, get_task


def predict(task: str | Task, model: str | Path, input: str | Path, out: str | Path | None = None,
            batch_size: int = 64, device: str | None = None, progress: bool = False):
    """Predictions for FILE: {question id: answer} for MRC, a list of labels for classification."""
    from bertwwm.finetune import Encoded, Settings, pick_device, predict_examples
    from bertwwm.tasks.heads import load_finetuned

    task = get_task(task) if isinstance(task, str) else task
    net, tokenizer, saved = load_finetuned(model, task)
    settings = Settings(**{f.name: saved[f.name] for f in fields(Settings) if f.name in saved})
    examples = task.read(input, require_labels=False)
    dev = pick_device(device)
    net.to(dev)
    preds = predict_examples(task, net, Encoded(task, examples, tokenizer, settings), settings, batch_size, dev,
                             progress)
    if out is not None:
        readers.write_predictions(out, task.prediction_format, preds)
    return preds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task")
    parser.add_argument("--model", required=True, help="fine-tuned model folder (RUN/best-model)")
    parser.add_argument("--input", required=True, help="examples in the task's format")
    parser.add_argument("--out", help="predictions file (default: print to stdout)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device")


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    preds = predict(task, args.model, args.input, args.out, args.batch_size, args.device, progress=args.out is not None)
    if args.out is None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the same writer as for files, so stdout is the same layout
            path = Path(tmp) / "predictions"
            readers.write_predictions(path, task.prediction_format, preds)
            sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0
