"""`bertwwm init`: a randomly initialised model in the standard folder layout: the "no pretraining" control.

A claim that pretraining helped needs the same model without it: same shape, same vocabulary, same
fine-tuning. `bertwwm init --preset tiny --out runs/random-tiny` writes that model (config.json,
model.safetensors, tokenizer files) as any pretrained folder, so `finetune`, `report` and transformers'
`AutoModel.from_pretrained` treat both alike. `--like MODEL` copies another model's shape instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bertwwm.errors import UserError
from bertwwm.fileio import atomic_path

RANDOM_PREFIX = "random:"
MARKER = "bertwwm-init.json"  # written beside the weights: `report` labels runs of this model "random init"


def init_model(out: str | Path, *, preset: str | None = "tiny", like: str | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised `BertForMaskedLM` (weights a function of `seed`) to `out`; return `out`."""
    import torch

    from bertwwm.model import bert_config, build_model, save_model

    if like is not None:
        from bertwwm import zoo

        config = zoo.load_bert_config(str(like))
        config.hidden_dropout_prob = config.hidden_dropout_prob if config.hidden_dropout_prob else 0.1
        config.attention_probs_dropout_prob = config.attention_probs_dropout_prob or 0.1
    else:
        config = bert_config(preset or "tiny")
    out = Path(out)
    if (out / "config.json").exists():
        raise UserError("the folder already holds a model; choose another --out", out)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_model(config, nsp=False)
    finally:
        torch.random.set_rng_state(state)  # an API caller's own random stream is left as it was
    with atomic_path(out) as tmp:
        save_model(model, tmp)
        (tmp / MARKER).write_text(json.dumps({"random_init": True, "seed": seed, "preset": preset,
                                              "like": like}) + "\n", encoding="utf-8")
    return out


def is_random_init(ref: str) -> bool:
    """A 'random:' reference, or a folder `bertwwm init` wrote: a model that was never pretrained."""
    return ref.startswith(RANDOM_PREFIX) or (Path(ref) / MARKER).is_file()


def parse_random_ref(ref: str) -> tuple[str, int] | None:
    """'random:tiny' or 'random:tiny@3' -> (preset, seed); None for any other model reference."""
    if not ref.startswith(RANDOM_PREFIX):
        return None
    from bertwwm.model import PRESETS

    body = ref[len(RANDOM_PREFIX):]
    preset, _, seed = body.partition("@")
    if preset not in PRESETS or (seed and not seed.isdigit()):
        raise UserError(f"cannot read {ref!r}: write random:PRESET or random:PRESET@SEED with a preset of "
                        f"{', '.join(PRESETS)}")
    return preset, int(seed or 0)


def materialise_random(ref: str, cache: Path) -> Path:
    """The folder of a 'random:PRESET[@SEED]' model under `cache`, written on first use."""
    preset, seed = parse_random_ref(ref)
    folder = Path(cache) / f"random-{preset}-seed{seed}"
    if not (folder / "config.json").is_file():
        init_model(folder, preset=preset, seed=seed)
    return folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.model import PRESETS

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
