"""Model shapes by name and their transformers `BertConfig` with the Chinese vocabulary.

A leaf module (no torch, no other bertwwm model code), so the model resolver and the random-init control can
read shapes without importing the training model.
"""

from __future__ import annotations

from bertwwm.core.errors import UserError
from bertwwm.text.tokens import VOCAB_SIZE

# name -> (layers, hidden, heads, intermediate)
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (2, 128, 2, 512),
    "small": (4, 256, 4, 1024),
    "base": (12, 768, 12, 3072),
    "large": (24, 1024, 16, 4096),
}


def bert_config(preset: str = "base", *, dropout: float | None = None, **overrides):
    """A `BertConfig` for one of PRESETS with the Chinese vocabulary, 512 positions and 2 token types."""
    from transformers import BertConfig

    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
    layers, hidden, heads, intermediate = PRESETS[preset]
    kwargs = dict(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate, max_position_embeddings=512, type_vocab_size=2,
        pad_token_id=0,
    )
    if dropout is not None:
        kwargs.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    kwargs.update(overrides)
    return BertConfig(**kwargs)
