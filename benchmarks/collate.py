"""Dynamic whole word masking at batch time: bertwwm's WholeWordMaskCollator vs transformers 5's
DataCollatorForLanguageModeling(whole_word_mask=True), on the same pre-tokenised batches, in one process.

Instances are real text (../shared/data/corpus) segmented with jieba, aligned to WordPiece tokens and packed to
--seq-length tokens with [CLS]/[SEP]. transformers finds words from offset mappings (a new word where a token
does not touch the previous one), so its items carry offsets built to encode exactly our word boundaries: both
collators see the same words. Note transformers' whole-word mode only ever writes [MASK] (it turns 80/10/10
off) and draws no budget; ours does 80/10/10 and Google's budget, i.e. more work per batch.

Prints both rates and, as the final line, {"ours": x, "baseline": y, "ratio": x/y, "unit": "tokens/s"}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bertwwm.text.align import WordAligner
from bertwwm.data.collate import WholeWordMaskCollator
from bertwwm.data.masking import MaskingConfig
from bertwwm.text.tokens import CLS_ID, SEP_ID, chinese_tokenizer

SHARED = Path(os.environ.get("BERTWWM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def read_lines(limit_chars: int) -> list[str]:
    lines, total = [], 0
    for path in (SHARED / "corpus" / "clue-small-sample.txt", SHARED / "corpus" / "prc-laws.txt.gz"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    lines.append(line)
                    total += len(line)
                    if total >= limit_chars:
                        return lines
    return lines


def build_items(seq_length: int, n_items: int) -> list[dict]:
    """Pack aligned text into instances of exactly seq_length tokens: [CLS] tokens [SEP]."""
    aligned = WordAligner("jieba").align_many(read_lines(limit_chars=int(n_items * seq_length * 1.2)))
    ids = np.concatenate([a.ids for a in aligned]).astype(np.int64)
    starts = np.concatenate([a.word_starts for a in aligned])
    body = seq_length - 2
    items = []
    for i in range(min(n_items, len(ids) // body)):
        chunk_ids, chunk_starts = ids[i * body:(i + 1) * body], starts[i * body:(i + 1) * body].copy()
        chunk_starts[0] = True  # a chunk never begins mid-word
        items.append({
            "input_ids": np.concatenate(([CLS_ID], chunk_ids, [SEP_ID])),
            "word_starts": np.concatenate(([True], chunk_starts, [True])),
        })
    return items


def hf_item(item: dict) -> dict:
    """The same instance as transformers wants it: offsets with a one-character gap before every new word."""
    starts = item["word_starts"]
    begin = np.arange(len(starts)) + np.cumsum(starts)
    special = np.zeros(len(starts), dtype=np.int64)
    special[[0, -1]] = 1
    return {
        "input_ids": item["input_ids"].tolist(),
        "special_tokens_mask": special.tolist(),
        "offset_mapping": np.stack([begin, begin + 1], axis=1).tolist(),
    }


def rate(collate, batches: list[list[dict]], repeats: int) -> float:
    tokens = sum(len(item["input_ids"]) for batch in batches for item in batch)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for batch in batches:
            collate(batch)
        best = min(best, time.perf_counter() - t0)
    return tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from transformers import DataCollatorForLanguageModeling

    items = build_items(args.seq_length, args.batches * args.batch_size)
    batches = [items[i:i + args.batch_size] for i in range(0, len(items), args.batch_size)]
    hf_batches = [[hf_item(item) for item in batch] for batch in batches]

    ours = WholeWordMaskCollator(MaskingConfig(max_predictions=20), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Random token replacement is not supported with whole word masking"
        baseline = DataCollatorForLanguageModeling(chinese_tokenizer(), whole_word_mask=True, seed=0)
    baseline(hf_batches[0])  # both get one warm-up call
    ours(batches[0])

    ours_rate = rate(ours, batches, args.repeats)
    baseline_rate = rate(baseline, hf_batches, args.repeats)
    tokens = sum(len(item["input_ids"]) for item in items)
    print(f"{len(batches)} batches of {args.batch_size} x {args.seq_length} ({tokens} tokens), best of {args.repeats}")
    print(f"bertwwm WholeWordMaskCollator (wwm, 80/10/10, budget):           {ours_rate / 1e6:.2f}M tokens/s")
    print(f"transformers DataCollatorForLanguageModeling(whole_word_mask): {baseline_rate / 1e6:.2f}M tokens/s")
    print(json.dumps({"ours": round(ours_rate), "baseline": round(baseline_rate),
                      "ratio": round(ours_rate / baseline_rate, 2), "unit": "tokens/s"}))


if __name__ == "__main__":
    main()
