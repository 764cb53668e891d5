"""The options of a `bertwwm prepare` job, checked and written down as the config dict of its manifest.

Every option that changes the output is recorded (inputs with their sizes, segmenter, user dictionary and
vocabulary with their hashes, masking, lengths, seed, ...), so that a resumed or joined run can prove it is
the same job. `bertwwm.data.prepare_shard` builds shards from this dict; `bertwwm.data.prepare` runs the job.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Sequence

from bertwwm.core.errors import UserError
from bertwwm.data.storage import FORMAT_VERSION

DEFAULT_SEED = 12345  # Google's create_pretraining_data.py default random_seed
DEFAULT_DUPE_FACTOR = 10  # Google's default dupe_factor
DEFAULT_SHARD_CHARS = 1_000_000  # ~1M input tokens: ~130 MB of working memory per worker at dupe 10
MASKINGS = ("wwm", "char", "ngram", "macbert")
SIMILAR_WORDS_FILE = "similar_words.json"  # the table --masking macbert builds when --similar-words is not given


def default_max_predictions(max_seq_length: int) -> int:
    """Google's settings (20 at length 128, 80 at 512), else 15% of the length rounded up."""
    return {128: 20, 512: 80}.get(max_seq_length, math.ceil(0.15 * max_seq_length))


def _file_fingerprint(files: Sequence[Path]) -> list[dict]:
    return [{"path": str(f.resolve()), "bytes": f.stat().st_size} for f in files]


def _sha256_or_none(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        raise UserError("user dictionary not found", path) from None


def build_config(inputs: Sequence[str | Path], files: Sequence[Path], **o: Any) -> dict:
    """Every option that changes the output, so a resumed run can prove it is the same job."""
    if o["masking"] not in MASKINGS:
        raise UserError(f"--masking must be one of {', '.join(MASKINGS)}, got {o['masking']!r}")
    if o["max_seq_length"] < 8 or o["max_seq_length"] > 65535:
        raise UserError(f"--max-seq-length must be between 8 and 65535, got {o['max_seq_length']}")
    max_predictions = o["max_predictions"]
    if max_predictions is None:
        max_predictions = default_max_predictions(o["max_seq_length"])
    if max_predictions < 1:
        raise UserError(f"--max-predictions must be positive, got {max_predictions}")
    if o["dynamic"] and o["dupe_factor"] not in (None, 1):
        raise UserError("--dynamic stores each instance once (masks are drawn at training time); "
                        "drop --dupe-factor or drop --dynamic")
    dupe = 1 if o["dynamic"] else (o["dupe_factor"] or DEFAULT_DUPE_FACTOR)
    if dupe < 1:
        raise UserError(f"--dupe-factor must be at least 1, got {dupe}")
    if not 0.0 <= o["short_seq_prob"] <= 1.0:
        raise UserError(f"--short-seq-prob must be in [0, 1], got {o['short_seq_prob']}")
    if o["num_shards"] < 1 or not 0 <= o["shard_index"] < o["num_shards"]:
        raise UserError(f"--shard-index must be in [0, --num-shards), got {o['shard_index']} of {o['num_shards']}")
    if o["shard_chars"] < 1000:
        raise UserError(f"--shard-chars must be at least 1000, got {o['shard_chars']}")
    vocab = _vocab_entry(o["vocab"])
    return {
        "inputs": [str(Path(i).resolve()) for i in inputs],
        "input_files": _file_fingerprint(files),
        "doc_per_line": bool(o["doc_per_line"]),
        "segmenter": o["segmenter"],
        "user_dict": None if o["user_dict"] is None else str(Path(o["user_dict"]).resolve()),
        "user_dict_sha256": _sha256_or_none(o["user_dict"]),
        "masking_policy": o["masking"],
        "masking_config": None,  # filled in by masking_config
        "max_seq_length": int(o["max_seq_length"]),
        "max_predictions": int(max_predictions),
        "nsp": bool(o["nsp"]),
        "style": "bert-pairs" if o["nsp"] else "roberta-full-sentences",
        "short_seq_prob": float(o["short_seq_prob"]) if o["nsp"] else None,
        "masking": "dynamic" if o["dynamic"] else "static",
        "dupe_factor": int(dupe),
        "shard_chars": int(o["shard_chars"]),
        "num_shards": int(o["num_shards"]),
        "seed": int(o["seed"]),
        "format_version": FORMAT_VERSION,
        **({"vocab": vocab} if vocab is not None else {}),  # absent: the shipped vocabulary (older folders too)
    }


def _vocab_entry(vocab: str | Path | None) -> dict | None:
    """--vocab FILE or a model folder with an extended vocabulary -> {path, sha256, size}; None: the shipped one."""
    if vocab is None:
        return None
    from bertwwm.text.tokens import check_vocab, load_vocab

    path = Path(vocab)
    if path.is_dir():
        path = path / "vocab.txt"
    entries = load_vocab(str(path))
    check_vocab(entries, path)
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": len(entries)}


def vocab_path(config: dict) -> str | None:
    """The vocab.txt a prepared folder was tokenized with (None: the shipped vocabulary)."""
    return (config.get("vocab") or {}).get("path")


def similar_words_entry(path: Path) -> dict:
    """--similar-words FILE -> {path, sha256}, so that a resumed run proves it masks with the same table."""
    try:
        data = path.read_bytes()
    except OSError:
        raise UserError("similar-words table not found", path) from None
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(data).hexdigest()}


def masking_config(config: dict):
    """The `MaskingConfig` of a job's config dict (masking policy and prediction budget)."""
    from bertwwm.data.masking import MaskingConfig

    return MaskingConfig(policy=config["masking_policy"], max_predictions=config["max_predictions"])
