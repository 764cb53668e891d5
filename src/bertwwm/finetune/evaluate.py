"""`bertwwm evaluate TASK --gold FILE --predictions FILE`: score a predictions file with the official metric.

Prints one JSON line. CMRC 2018 and DRCD: {"em", "f1", "total", "skip"} on the official script's 0-100 scale
(the script prints them with %.3f); CJRC: civil / criminal / overall {em, f1, qas} as the CAIL 2019 scorer
rounds them; classification: {"accuracy", "total", "skip"}.

Prediction files are the official submission layouts: {"question id": "answer"} for CMRC 2018 / DRCD,
[{"id", "answer"}] for CJRC, and "index<TAB>prediction" rows for the classification tasks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bertwwm.core.errors import UserError
from bertwwm.tasks.registry import Task, get_task, with_classes


def evaluate_files(task: str | Task, gold: str | Path, predictions: str | Path,
                   classes: str | Path | None = None) -> dict:
    """The official metric of `predictions` against the `gold` file, which may sit at any path (THUCNews:
    the ten official classes, or `classes`, a class.txt)."""
    task = with_classes(get_task(task) if isinstance(task, str) else task, classes)
    examples = task.read(gold)
    preds = task.predictions.read(predictions, None if task.is_mrc else len(examples))
    if not task.is_mrc:
        preds = list(preds) + [None] * (len(examples) - len(preds))
        unknown = sorted({p for p in preds if p is not None and p not in task.labels})
        if unknown:
            raise UserError(f"labels {unknown[:5]} are not labels of {task.name} ({', '.join(task.labels)})",
                            predictions)
    return task.scorer(examples, preds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.tasks.registry import TASKS

    parser.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--gold", required=True,
                        help="the task's file with reference answers/labels, in its official format, at any path")
    parser.add_argument("--predictions", required=True, help="predictions in the official layout")
    parser.add_argument("--classes", metavar="FILE",
                        help="thucnews: class names, one per line (default: the official ten)")


def run(args: argparse.Namespace) -> int:
    print(json.dumps(evaluate_files(args.task, args.gold, args.predictions, args.classes), ensure_ascii=False))
    return 0
