"""`bertwwm pretrain`: the command line. The flags of config settings come from the schema (`Flag`s of the
fields of `PretrainConfig`); the few here say which recipe to read and how to reshape it."""

from __future__ import annotations

import argparse
import os
import sys

from bertwwm.core.errors import UserError
from bertwwm.pretrain.config import PretrainConfig, settings
from bertwwm.pretrain.loop import pretrain
from bertwwm.pretrain.recipe import apply_set, config_from_recipe, load_recipe, parse_set, recipe_names, scale_steps


def run_flags() -> dict[str, dict]:
    """Flags that are not settings of the config: {flag: argparse keywords}."""
    return {
        "--recipe": dict(required=True, metavar="NAME|FILE",
                         help="bundled recipe name (" + ", ".join(recipe_names()) + ") or a TOML file"),
        "--max-steps": dict(type=int, metavar="N", help="total steps (phases scaled in proportion)"),
        "--batch-size": dict(type=int, metavar="B", help="global batch of every phase"),
        "--set": dict(action="append", metavar="SECTION.KEY=VALUE",
                      help="override any recipe value, e.g. --set optim.warmup_ratio=0.01 "
                           "--set phases.1.batch_size=256 (repeatable)"),
    }


# The order of `--help` (as it was before the flags came from the schema); a flag not named here comes last.
HELP_ORDER = ("--recipe", "--data", "--data-512", "--out", "--init", "--preset", "--resume", "--verify",
              "--max-steps", "--time-budget", "--heldout", "--save-every", "--keep-last", "--batch-size",
              "--grad-accum", "--lr", "--optimizer", "--warmup-steps", "--seed", "--bf16", "--compile", "--fsdp",
              "--nsp", "--clip-grad", "--eval-every", "--log-every", "--threads", "--set", "--no-progress",
              "--teacher", "--distill-temperature", "--distill-weight", "--head-warmup-steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flags = run_flags()
    for s in settings(PretrainConfig):
        if s.flag is not None:
            flags[s.flag.name] = dict(s.flag.options, dest=s.name)
    order = {name: k for k, name in enumerate(HELP_ORDER)}
    for name in sorted(flags, key=lambda n: order.get(n, len(order))):
        parser.add_argument(name, **flags[name])


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    recipe, where = load_recipe(args.recipe)
    apply_set(recipe, parse_set(args.set))
    overrides = {}
    for s in settings(PretrainConfig):
        if s.flag is not None:
            value = getattr(args, s.name)
            overrides[s.name] = s.parse(value) if s.parse is not None and value is not None else value
    cfg = config_from_recipe(recipe, where, **overrides)
    if args.batch_size is not None:
        for p in cfg.phases:
            p.batch_size = args.batch_size
    if args.max_steps is not None:
        scale_steps(cfg, args.max_steps)
    cfg.validate(where)
    if cfg.data is None and any(p.data == "data" for p in cfg.phases):
        raise UserError("--data DIR is required (a folder written by `bertwwm prepare`)")
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    final = pretrain(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"final model: {final}", file=sys.stderr)
    return 0
