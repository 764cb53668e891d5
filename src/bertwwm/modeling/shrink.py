"""`bertwwm shrink MODEL --layers 0,1,2 --out SMALL`: a smaller model cut from chosen layers of a bigger one.

HFL's RBT3 / RBTL3 are three-layer models initialised from the first three layers of RoBERTa-wwm-ext(-large)
and then pretrained further. This writes such a starting point from any BERT model: the embeddings, the
chosen encoder layers (in the order given, renumbered from 0), the pooler and the MLM (and NSP) heads,
copied exactly; every other setting of the config is kept. Continue with `bertwwm pretrain --init SMALL`,
optionally `--teacher MODEL` to distil from the big model.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from bertwwm.core.errors import UserError

_LAYER = re.compile(r"^bert\.encoder\.layer\.(\d+)\.")


def parse_layers(text: str, available: int) -> list[int]:
    """"0,1,2" or "0-2" (or a mix) -> layer indices, each in [0, available) and given once."""
    layers: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(-?\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise UserError(f"--layers expects indices such as 0,1,2 or 0-2, got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UserError(f"--layers range {part!r} runs backwards")
        layers.extend(range(lo, hi + 1))
    for i in layers:
        if not 0 <= i < available:
            raise UserError(f"unknown layer index {i}: the model has {available} layers (0 to {available - 1})")
    repeated = sorted({i for i in layers if layers.count(i) > 1})
    if repeated:
        raise UserError(f"layer {repeated[0]} is given more than once in --layers")
    return layers


def shrink_state(state: dict, layers: list[int]) -> dict:
    """The state dict of the small model: chosen layers renumbered 0..k-1, everything else as it was."""
    new_index = {old: new for new, old in enumerate(layers)}
    out = {}
    for key, value in state.items():
        m = _LAYER.match(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) in new_index:
            out[f"bert.encoder.layer.{new_index[int(m.group(1))]}.{key[m.end():]}"] = value
    return out


def shrink(model_ref: str, layers: str | list[int], out: str | Path, *, force: bool = False) -> Path:
    """Write the shrunk model folder; returns its path."""
    from bertwwm.core.fileio import atomic_path
    from bertwwm.modeling.model import save_model
    from bertwwm.text.tokens import model_vocab
    from bertwwm.modeling.vocab_extend import load_with_heads

    out = Path(out)
    if out.exists() and not force:
        raise UserError("output folder exists; pass --force to replace it", out)
    big, path = load_with_heads(str(model_ref))
    available = big.config.num_hidden_layers
    chosen = parse_layers(",".join(map(str, layers)) if isinstance(layers, list) else layers, available)
    config = big.config.__class__.from_dict(big.config.to_dict())
    config.num_hidden_layers = len(chosen)
    small = type(big)(config)
    missing, unexpected = small.load_state_dict(shrink_state(big.state_dict(), chosen), strict=False)
    tied = set(getattr(small, "_tied_weights_keys", None) or {})
    if [k for k in missing if k not in tied] or unexpected:
        raise RuntimeError(f"shrunk state does not fit the small model: {missing[:3]} {unexpected[:3]}")
    small.tie_weights()
    with atomic_path(out) as tmp:
        save_model(small, tmp, vocab_path=model_vocab(path))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="local folder, zoo name, hub id or TF checkpoint")
    parser.add_argument("--layers", required=True, metavar="LIST",
                        help="encoder layers to keep, 0-based, in order: e.g. 0,1,2 (RBT3) or 0-2")
    parser.add_argument("--out", required=True, metavar="DIR", help="the small model folder")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    out = shrink(args.model, args.layers, args.out, force=args.force)
    print(f"wrote {out}: layers {args.layers} of {args.model}", file=sys.stderr)
    return 0
