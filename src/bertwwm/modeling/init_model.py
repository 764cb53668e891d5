"""`bertwwm init`: a randomly initialised model in the standard folder layout: the "no pretraining" control.

A claim that pretraining helped needs the same model without it: same shape, same vocabulary, same
fine-tuning. `bertwwm init --preset tiny --out runs/random-tiny` writes that model (config.json,
model.safetensors, tokenizer files) as any pretrained folder, so `finetune`, `report` and transformers'
`AutoModel.from_pretrained` treat both alike. `--like MODEL` copies another model's shape instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertwwm.modeling.random_init import (MARKER, RANDOM_PREFIX, is_random_init, materialise_random,  # noqa: F401
                                 parse_random_ref, write_random_model)


def init_model(out: str | Path, *, preset: str | None = "tiny", like: str | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised `BertForMaskedLM` (weights a function of `seed`) to `out`; return `out`.
    Its shape is a preset's, or (`like`) another model's: a folder, zoo name or hub id."""
    from bertwwm.modeling.model import bert_config

    if like is not None:
        from bertwwm.modeling import zoo

        config = zoo.load_bert_config(str(like))
        config.hidden_dropout_prob = config.hidden_dropout_prob or 0.1
        config.attention_probs_dropout_prob = config.attention_probs_dropout_prob or 0.1
    else:
        config = bert_config(preset or "tiny")
    return write_random_model(out, config, seed=seed, note={"preset": None if like else (preset or "tiny"),
                                                            "like": like})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.modeling.model import PRESETS

    parser.add_argument("--out", required=True, metavar="DIR", help="model folder to write")
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--preset", choices=tuple(PRESETS), default=None, help="model shape (default tiny)")
    shape.add_argument("--like", metavar="MODEL", help="copy the shape of this model (folder, zoo name, hub id)")
    parser.add_argument("--seed", type=int, default=0, help="the weights are a function of the seed (default 0)")


def run(args: argparse.Namespace) -> int:
    folder = init_model(args.out, preset=args.preset or (None if args.like else "tiny"), like=args.like,
                        seed=args.seed)
    print(f"random-init model: {folder}", file=sys.stderr)
    return 0
