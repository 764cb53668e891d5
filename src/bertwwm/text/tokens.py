"""Google's Chinese BERT WordPiece vocabulary (shipped in the package) and its fast tokenizer.

transformers 5 silently ignores `vocab_file=` (a 5-token vocab, everything [UNK]), so the tokenizer is
built from an explicit vocab dict and its size and key ids are checked every time.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError

VOCAB_SIZE = 21128
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
EXPECTED_IDS = {"[PAD]": PAD_ID, "[UNK]": UNK_ID, "[CLS]": CLS_ID, "[SEP]": SEP_ID, "[MASK]": MASK_ID, "的": 4638}
MODEL_MAX_LENGTH = 512
IGNORE_INDEX = -100  # the label of positions that are not predicted (torch's CrossEntropyLoss default)


def default_vocab_path() -> Path:
    return Path(str(resources.files("bertwwm") / "resources" / "vocab.txt"))


@functools.cache
def load_vocab(path: str | Path | None = None) -> dict[str, int]:
    """Read a BERT vocab.txt (one token per line, id = line number)."""
    path = Path(path) if path is not None else default_vocab_path()
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise UserError("vocabulary file not found", path) from None
    except UnicodeDecodeError as e:
        raise UserError(f"vocabulary is not UTF-8 ({e.reason})", path) from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        token = token.rstrip("\r")
        if token in vocab:
            raise UserError(f"duplicate vocabulary entry {token!r}", path, i + 1)
        vocab[token] = i
    return vocab


def check_vocab(vocab: dict[str, int], path: str | Path | None = None) -> None:
    """Fail unless this is Google's Chinese BERT vocab layout (21,128 entries and the standard ids), or an
    extension of it (`bertwwm vocab extend`): those 21,128 entries unchanged, new ones appended."""
    where = path if path is not None else "vocab"
    if len(vocab) < VOCAB_SIZE:
        raise UserError(f"expected the {VOCAB_SIZE}-entry Chinese BERT vocabulary, got {len(vocab)} entries", where)
    for token, want in EXPECTED_IDS.items():
        if vocab.get(token) != want:
            raise UserError(f"expected {token} at id {want}, got {vocab.get(token)}", where)
    if len(vocab) > VOCAB_SIZE and list(vocab)[:VOCAB_SIZE] != list(load_vocab()):
        raise UserError(f"a {len(vocab)}-entry vocabulary must extend the Chinese BERT one: its first "
                        f"{VOCAB_SIZE} entries differ from it", where)


def model_vocab(ref: str | Path | None) -> str | None:
    """The vocab.txt of a model folder whose vocabulary was extended (`bertwwm vocab extend`), else None
    (the shipped 21,128-entry vocabulary: zoo names, hub ids, random init, standard folders)."""
    if ref is None:
        return None
    path = Path(ref) / "vocab.txt"
    if not path.is_file():
        return None
    vocab = load_vocab(str(path))
    if len(vocab) == VOCAB_SIZE:
        return None
    check_vocab(vocab, path)
    return str(path)


@functools.cache
def chinese_tokenizer(vocab_path: str | None = None):
    """The fast BERT tokenizer with BERT-Chinese normalisation.

    Lower-casing, accent stripping (implied by lower-casing, as in Google's BasicTokenizer), every CJK
    character split off, control characters dropped. Cached: build it once per process.
    """
    from transformers import BertTokenizer  # the tokenizers-backed (fast) class in transformers 5

    vocab = load_vocab(vocab_path)
    check_vocab(vocab, vocab_path)
    tok = BertTokenizer(
        vocab=dict(vocab), do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None,
        model_max_length=MODEL_MAX_LENGTH,
    )
    if len(tok) != len(vocab) or tok.convert_tokens_to_ids("的") != EXPECTED_IDS["的"]:
        raise RuntimeError(f"tokenizer came out with {len(tok)} entries; transformers ignored the vocabulary")
    return tok


def save_tokenizer(folder: str | Path, vocab_path: str | None = None) -> None:
    """Write tokenizer files into a model folder: tokenizer.json, tokenizer_config.json and vocab.txt."""
    folder = Path(folder)
    tok = chinese_tokenizer(vocab_path)
    tok.save_pretrained(str(folder))
    vocab = load_vocab(vocab_path)
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")


@dataclass(frozen=True)
class VocabInfo:
    """What masking needs to know about the vocabulary, as arrays for vectorised code."""

    size: int
    mask_id: int
    special_ids: np.ndarray  # ids never masked and never predicted: [PAD] [UNK] [CLS] [SEP] [MASK]
    random_ids: np.ndarray  # ids a "random token" replacement may draw: no specials, [unused*], ##*

    @classmethod
    @functools.cache
    def from_vocab(cls, vocab_path: str | None = None) -> "VocabInfo":
        vocab = load_vocab(vocab_path)
        special = np.array(sorted({PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID}), dtype=np.int64)
        random_ids = np.array(
            [i for t, i in vocab.items()
             if not (t.startswith("[") and t.endswith("]")) and not t.startswith("##")],
            dtype=np.int64,
        )
        return cls(size=len(vocab), mask_id=MASK_ID, special_ids=special, random_ids=random_ids)
