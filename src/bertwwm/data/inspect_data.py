"""`bertwwm inspect DIR`: a prepared folder's statistics and a few decoded instances.

Static masks are shown in place as 【original→input】 per masked word, e.g. 【语言模型→[MASK][MASK]语[MASK]】:
what the model must predict, then what it is given (80% [MASK], 10% a random token, 10% unchanged). Dynamic
folders (no stored masks) show the words the masks will be drawn over, separated by spaces.
"""

from __future__ import annotations

import argparse
import functools
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.data.storage import IGNORE_INDEX, PreparedDataset, read_manifest
from bertwwm.text.tokens import CLS_ID, PAD_ID, SEP_ID, load_vocab

MASK_OPEN, MASK_ARROW, MASK_CLOSE = "【", "→", "】"


@dataclass
class DecodedInstance:
    index: int
    length: int
    segments: list[str]  # the text between [CLS]/[SEP] markers: [A, B] for pairs, one or more when packed
    next_sentence_label: int | None  # 0 = B follows A, 1 = B is random; None without NSP
    masked_words: list[tuple[str, str]]  # (original, what the model is given) per masked word
    num_masked: int


@functools.cache
def _id_to_token() -> tuple[str, ...]:
    vocab = load_vocab()
    tokens = [""] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    return tuple(tokens)


def _is_wordlike(token: str) -> bool:
    return token[:1].isascii() and token[:1].isalnum()


def join_tokens(tokens: list[str]) -> str:
    """WordPiece tokens back to text: ## pieces glue on, Latin words and numbers get a space between them,
    Chinese characters and punctuation none."""
    out: list[str] = []
    prev = ""
    for t in tokens:
        if t.startswith("##"):
            out.append(t[2:])
            prev = t[2:]
            continue
        if out and _is_wordlike(prev[-1:]) and _is_wordlike(t):
            out.append(" ")
        out.append(t)
        prev = t
    return "".join(out)


def decode_item(item: dict, index: int = 0) -> DecodedInstance:
    """Turn one `PreparedDataset` item back into text, masked words marked 【original→input】."""
    tokens = _id_to_token()
    ids = np.asarray(item["input_ids"])
    labels = item.get("labels")
    original = ids.copy()
    masked = np.zeros(len(ids), dtype=bool)
    if labels is not None:
        masked = np.asarray(labels) != IGNORE_INDEX
        original[masked] = np.asarray(labels)[masked]
    starts = np.asarray(item["word_starts"], dtype=bool)
    dynamic = labels is None
    segments: list[str] = []
    pieces: list[str] = []
    masked_words: list[tuple[str, str]] = []
    k, n = 0, len(ids)
    while k < n:
        tok_id = int(original[k])
        if tok_id in (CLS_ID, SEP_ID, PAD_ID) and not masked[k]:
            if tok_id == SEP_ID:
                segments.append("".join(pieces).strip())
                pieces = []
            k += 1
            continue
        if masked[k]:  # a run of masked tokens of one word
            j = k + 1
            while j < n and masked[j] and not starts[j]:
                j += 1
            orig = join_tokens([tokens[i] for i in original[k:j]])
            given = "".join(tokens[i] for i in ids[k:j])
            masked_words.append((orig, given))
            pieces.append(f"{MASK_OPEN}{orig}{MASK_ARROW}{given}{MASK_CLOSE}")
            k = j
            continue
        j = k + 1
        while j < n and not starts[j] and not masked[j] and int(original[j]) not in (CLS_ID, SEP_ID):
            j += 1
        word = join_tokens([tokens[i] for i in original[k:j]])
        if dynamic and pieces:
            pieces.append(" ")
        elif pieces and _is_wordlike(pieces[-1][-1:]) and _is_wordlike(word):
            pieces.append(" ")
        pieces.append(word)
        k = j
    if pieces:
        segments.append("".join(pieces).strip())
    nsp = item.get("next_sentence_label")
    return DecodedInstance(index=index, length=n, segments=segments,
                           next_sentence_label=None if nsp is None else int(nsp),
                           masked_words=masked_words, num_masked=int(masked.sum()))


def summary(folder: str | Path) -> dict:
    """The manifest's headline facts: options, counts, shards, lengths."""
    m = read_manifest(folder)
    cfg = m["config"]
    return {
        "folder": str(folder),
        "style": cfg.get("style"),
        "masking": m["masking"],
        "masking_policy": cfg.get("masking_policy"),
        "segmenter": cfg.get("segmenter"),
        "nsp": m["nsp"],
        "max_seq_length": m["max_seq_length"],
        "max_predictions": cfg.get("max_predictions"),
        "dupe_factor": m["dupe_factor"],
        "seed": cfg.get("seed"),
        "shards": len(m["shards"]),
        "counts": m["counts"],
    }


def inspect(folder: str | Path, n: int = 3, start: int = 0, verify: bool = False
            ) -> tuple[dict, list[DecodedInstance]]:
    """(summary, the decoded instances start .. start+n-1) of a prepared folder. `verify` hashes every file
    (otherwise only files not verified before are; see bertwwm.data.storage)."""
    info = summary(folder)
    ds = PreparedDataset(folder, verify=True if verify else None)
    if verify:
        info["verified"] = True
    if n and not 0 <= start < max(len(ds), 1):
        raise UserError(f"--start {start} is out of range: the folder holds {len(ds)} instances", folder)
    decoded = [decode_item(ds[i], i) for i in range(start, min(len(ds), start + n))]
    if decoded and ds.nsp:
        labels = np.concatenate([np.load(Path(folder) / s["name"] / "nsp_labels.npy", mmap_mode="r")
                                 for s in ds.manifest["shards"]])
        info["nsp_random_share"] = float(labels.mean()) if len(labels) else None
    return info, decoded


def inspect_dataset(folder: str | Path, n: int = 3, start: int = 0) -> str:
    """What `bertwwm inspect DIR` prints, as a string."""
    return render(*inspect(folder, n=n, start=start))


def render(info: dict, decoded: list[DecodedInstance]) -> str:
    c = info["counts"]
    lines = [
        f"{info['folder']}: {c.get('instances', 0):,} instances, {c.get('tokens', 0):,} tokens, "
        f"{info['shards']} shards",
        f"  {info['style']}, max_seq_length {info['max_seq_length']}, {info['masking']} "
        f"{info['masking_policy']} masking"
        + (f" x{info['dupe_factor']} copies, up to {info['max_predictions']} predictions" if info["masking"] ==
           "static" else "") + f", segmenter {info['segmenter']}, seed {info['seed']}",
        "  input: " + ", ".join(f"{k} {c[k]:,}" for k in ("files", "documents", "input_tokens") if k in c),
    ]
    if info.get("verified"):
        lines.append("  verified: every shard file matches its sha256 in the manifest; token ids fit the vocabulary")
    if c.get("instances"):
        lines.append(f"  mean instance length {c['tokens'] / c['instances']:.1f} tokens"
                     + (f", NSP random share {info['nsp_random_share']:.3f}" if info.get("nsp_random_share")
                        is not None else ""))
    issues = {k: v for k, v in c.items() if k.startswith(("skipped_", "split_")) or k == "alignment_fallbacks"}
    lines.append("  skipped/split: " + ", ".join(f"{k} {v:,}" for k, v in issues.items()))
    for d in decoded:
        head = f"\n#{d.index}  {d.length} tokens"
        if d.next_sentence_label is not None:
            head += "  NSP: " + ("B is a random segment (1)" if d.next_sentence_label else "B follows A (0)")
        if d.num_masked:
            head += f"  {d.num_masked} masked tokens in {len(d.masked_words)} words"
        lines.append(head)
        if d.next_sentence_label is not None and len(d.segments) == 2:
            lines += [f"  A: {d.segments[0]}", f"  B: {d.segments[1]}"]
        else:
            lines += [f"  {k + 1}: {s}" for k, s in enumerate(d.segments)]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", metavar="DIR", help="a folder written by `bertwwm prepare`")
    p.add_argument("-n", type=int, default=3, help="how many instances to decode (3)")
    p.add_argument("--start", type=int, default=0, help="index of the first instance to decode (0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--verify", action="store_true",
                   help="check the sha256 of every shard file against the manifest (and token ids against the "
                        "vocabulary), even files verified before")


def run(args: argparse.Namespace) -> int:
    info, decoded = inspect(args.folder, n=max(0, args.n), start=args.start, verify=args.verify)
    if args.json:
        import json

        print(json.dumps({**info, "instances": [asdict(d) for d in decoded]}, ensure_ascii=False))
    else:
        print(render(info, decoded))
    return 0
