"""Writing a converted model as a Hugging Face folder: config.json, model.safetensors, tokenizer files and a
README. Shared by the TF and the legacy converters (a leaf of `bertwwm.convert`: it imports none of them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from bertwwm.convert.names import ConversionReport
from bertwwm.core.errors import UserError


def vocab_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError("vocab.txt not found (the tokenizer needs it)", path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"vocab.txt is not UTF-8 ({e.reason})", path) from None
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def write_tokenizer(folder: Path, vocab_path: Path, vocab_size: int, do_lower_case: bool | None = None) -> str:
    """Tokenizer files for a converted model. Google's Chinese vocab gets the project's checked tokenizer;
    any other vocab (e.g. multilingual) is copied and a BERT tokenizer is built from it."""
    from bertwwm.text import tokens

    lines = vocab_lines(vocab_path)
    if len(lines) != vocab_size:
        raise UserError(f"vocab.txt has {len(lines)} entries but the config says vocab_size {vocab_size}", vocab_path)
    if lines == list(tokens.load_vocab()):
        tokens.save_tokenizer(folder)
        return "Google's Chinese BERT vocabulary (21,128 entries)"
    from transformers import BertTokenizer

    vocab = {}
    for i, token in enumerate(lines):
        vocab.setdefault(token, i)
    if do_lower_case is None:
        # Cased vocabularies (e.g. multilingual-cased) keep capitalised words; uncased ones have almost none.
        alpha = [t for t in lines if t.isascii() and t.isalpha()]
        do_lower_case = sum(t != t.lower() for t in alpha) < 0.01 * max(1, len(alpha))
    tok = BertTokenizer(vocab=vocab, do_lower_case=do_lower_case, tokenize_chinese_chars=True, strip_accents=None)
    if len(tok) != len(vocab):
        raise RuntimeError(f"tokenizer came out with {len(tok)} entries for a {len(vocab)}-entry vocabulary")
    tok.save_pretrained(str(folder))
    shutil.copyfile(vocab_path, folder / "vocab.txt")
    return f"the checkpoint's own vocabulary ({len(lines)} entries, lower-casing {'on' if do_lower_case else 'off'})"


def write_hf_folder(folder: Path, config, state: dict[str, np.ndarray]) -> None:
    """config.json + model.safetensors in the layout `save_pretrained` writes (tied decoder weights left
    out: transformers ties them again on load)."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    has_heads = any(k.startswith("cls.") for k in tensors)
    config.architectures = ["BertForPreTraining"] if has_heads else ["BertModel"]
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def readme(title: str, source: Path, config, report: ConversionReport, tokenizer: str, act_note: str) -> str:
    return (
        f"# {title}\n\nConverted by `bertwwm convert` from `{source}`.\n\n"
        f"- Architecture: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"{config.num_attention_heads} heads, vocab {config.vocab_size}.\n"
        f"- Activation: `hidden_act = \"{config.hidden_act}\"`. {act_note}\n"
        f"- Tokenizer: {tokenizer}.\n\n## Conversion report\n\n```\n{report.summary()}\n```\n\n"
        "Load it with `transformers.AutoModel.from_pretrained(folder)` (or `AutoModelForPreTraining`) and "
        "`AutoTokenizer.from_pretrained(folder)`.\n"
    )
