"""The `bertwwm` command: a thin map from subcommands onto the verb modules.

Each verb module defines `add_arguments(parser)` and `run(args) -> int | None`. Only the chosen verb's
module is imported, so `bertwwm show-masking` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from bertwwm import __version__
from bertwwm.core.errors import EXIT_USAGE, UserError

# name -> (module, one-line help). Order is the pipeline's order.
VERBS: dict[str, tuple[str, str]] = {
    "show-masking": ("bertwwm.data.show_masking", "show character vs whole-word masking of a sentence"),
    "vocab": ("bertwwm.modeling.vocab_extend", "extend a model's vocabulary with a domain corpus's characters (vocab extend)"),
    "prepare": ("bertwwm.data.prepare", "turn raw text into masked pretraining instances (sharded, resumable)"),
    "inspect": ("bertwwm.data.inspect_data", "print a prepared folder's stats and decode a few instances"),
    "init": ("bertwwm.modeling.init_model", "write a randomly initialised model: the no-pretraining control"),
    "pretrain": ("bertwwm.pretrain", "pretrain or continue pretraining a BERT-wwm model"),
    "shrink": ("bertwwm.modeling.shrink", "cut a smaller model from chosen layers of a bigger one (RBT3-style)"),
    "plot": ("bertwwm.pretrain.plot", "draw a run's loss and accuracy curves as PNG"),
    "fill-mask": ("bertwwm.modeling.fill_mask", "fill [MASK] spans with a masked language model"),
    "finetune": ("bertwwm.finetune", "fine-tune on one of the eight benchmarks over many seeds"),
    "evaluate": ("bertwwm.finetune.evaluate", "score predictions with a task's official metric"),
    "predict": ("bertwwm.finetune.predict", "run a fine-tuned model on new data"),
    "report": ("bertwwm.report", "render max (mean) tables over seeds"),
    "convert": ("bertwwm.modeling.convert_cli", "convert checkpoints: TensorFlow <-> Hugging Face, legacy PyTorch"),
    "models": ("bertwwm.modeling.zoo", "list the released Chinese BERT-wwm models"),
    "demo": ("bertwwm.demo", "run the report's pipeline in miniature"),
}


def _build_parser(verb: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bertwwm", description="Chinese BERT with whole word masking, end to end.")
    parser.add_argument("--version", action="version", version=f"bertwwm {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (module, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == verb:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"bertwwm {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"bertwwm {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a full disk outside the atomic writers (appended logs, TensorBoard events)
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        from bertwwm.core.fileio import disk_full_error

        print(f"bertwwm {args.verb}: error: {disk_full_error(e, e.filename or '.')}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
