"""Small models the tests build themselves (random weights, the shipped Chinese vocabulary)."""

from __future__ import annotations

import torch


def make_tiny_model(folder, layers=2, hidden=128):
    """A random `BertModel` folder with the tokenizer files: what `finetune --model` reads."""
    from transformers import BertConfig, BertModel

    from bertwwm.text.tokens import save_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(str(folder))
    save_tokenizer(folder)
    return str(folder)
