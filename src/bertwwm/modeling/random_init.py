"""Randomly initialised models as standard folders: the "no pretraining" control, and `random:PRESET` refs.

A leaf module (presets, tokens and transformers only), so the model resolver (`zoo`) and the `init` verb can
both use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path

RANDOM_PREFIX = "random:"
MARKER = "bertwwm-init.json"  # written beside the weights: `report` labels runs of this model "random init"


def write_random_model(out: str | Path, config, *, seed: int = 0, note: dict | None = None) -> Path:
    """Write a `BertForMaskedLM` of `config` with weights drawn under `seed` to `out` (a new folder)."""
    import torch
    from transformers import BertForMaskedLM

    from bertwwm.text.tokens import save_tokenizer

    out = Path(out)
    if (out / "config.json").exists():
        raise UserError("the folder already holds a model; choose another --out", out)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)  # what pretrain's random init builds (model.build_model, no NSP)
    finally:
        torch.random.set_rng_state(state)  # an API caller's own random stream is left as it was
    with atomic_path(out) as tmp:
        model.save_pretrained(str(tmp))
        save_tokenizer(tmp)
        (tmp / MARKER).write_text(json.dumps({"random_init": True, "seed": seed, **(note or {})}) + "\n",
                                  encoding="utf-8")
    return out


def is_random_init(ref: str) -> bool:
    """A 'random:' reference, or a folder `bertwwm init` wrote: a model that was never pretrained."""
    return ref.startswith(RANDOM_PREFIX) or (Path(ref) / MARKER).is_file()


def parse_random_ref(ref: str) -> tuple[str, int] | None:
    """'random:tiny' or 'random:tiny@3' -> (preset, seed); None for any other model reference."""
    if not ref.startswith(RANDOM_PREFIX):
        return None
    from bertwwm.modeling.presets import PRESETS

    preset, _, seed = ref[len(RANDOM_PREFIX):].partition("@")
    if preset not in PRESETS or (seed and not seed.isdigit()):
        raise UserError(f"cannot read {ref!r}: write random:PRESET or random:PRESET@SEED with a preset of "
                        f"{', '.join(PRESETS)}")
    return preset, int(seed or 0)


def materialise_random(ref: str, cache: Path) -> Path:
    """The folder of a 'random:PRESET[@SEED]' model under `cache`, written on first use."""
    from bertwwm.modeling.presets import bert_config

    preset, seed = parse_random_ref(ref)
    folder = Path(cache) / f"random-{preset}-seed{seed}"
    if not (folder / "config.json").is_file():
        write_random_model(folder, bert_config(preset), seed=seed, note={"preset": preset})
    return folder
