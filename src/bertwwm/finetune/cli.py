"""`bertwwm finetune TASK --model M --seeds N --out DIR`: the command line of the multi-seed runner.

The flags of the run's settings come from the Settings schema (finetune/settings.py: name, type, help); this
module adds the runner's own options (model, run folder, seeds, data folder, device, ...) and says where each
group goes in --help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from bertwwm.core.errors import UserError
from bertwwm.finetune.grid import finetune_grid, grid_summary
from bertwwm.finetune.runs import finetune
from bertwwm.finetune.settings import add_setting_flags, flagged_settings
from bertwwm.report import read_results, summarize

# Where the settings' flags sit in --help: the data files and the learning rate first (then --lr-grid), the
# training and evaluation settings after.
SETTING_FLAGS_FIRST = ("train", "dev", "test", "learning_rate")
SETTING_FLAGS_THEN = ("epochs", "batch_size", "gradient_accumulation", "max_seq_length", "doc_stride",
                      "max_answer_length", "warmup_proportion", "long_text", "max_train_examples", "max_eval_examples")


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1e-4,3e-4,1e-3, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.tasks.registry import TASKS

    parser.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--model", required=True,
                        help="zoo name, hub id (hfl/chinese-roberta-wwm-ext), HF folder or TF-1 checkpoint")
    parser.add_argument("--out", required=True, help="run folder (re-run the same command to resume)")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds, 1..N (default 10)")
    parser.add_argument("--data-dir", default=os.environ.get("BERTWWM_TASKS_DIR", "data/tasks"),
                        help="folder with one sub-folder per task in the official file names "
                             "(default $BERTWWM_TASKS_DIR or data/tasks)")
    add_setting_flags(parser, *SETTING_FLAGS_FIRST)
    parser.add_argument("--lr-grid", type=_float_list, metavar="LR,LR,...",
                        help="try each learning rate over all seeds (OUT/lr-RATE) and keep the one with the best "
                             "mean dev score (OUT/grid.json)")
    add_setting_flags(parser, *SETTING_FLAGS_THEN)
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--no-save-model", action="store_true", help="do not keep the best seed's model")
    parser.add_argument("--classes", metavar="FILE",
                        help="thucnews: class names, one per line, line i naming label index i "
                             "(default: the official ten, as in its class.txt)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (ours, nor transformers' loading / saving bars)")


def quiet_progress_bars() -> None:
    """--no-progress: transformers' "Loading weights" / "Writing model shards" bars and the hub's download
    bars are off too (for the rest of this process: the CLI runs one verb)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.no_progress:
        quiet_progress_bars()
    common = dict(seeds=args.seeds, data_dir=args.data_dir, save_model=not args.no_save_model, device=args.device,
                  eval_batch_size=args.eval_batch_size, progress=not args.no_progress, classes=args.classes,
                  **{name: getattr(args, name) for name in flagged_settings()})
    if args.lr_grid is not None:
        grid = finetune_grid(args.task, args.model, args.out, args.lr_grid, **common)
        print(grid_summary(grid), file=sys.stderr)
        results = read_results(args.out)
    else:
        results = finetune(args.task, args.model, args.out, **common)
    print(json.dumps(summarize(results), ensure_ascii=False))
    return 0
