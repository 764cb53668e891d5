"""One pretraining step (forward, backward, AdamW) of bertwwm vs transformers' BertForMaskedLM.

Both run the same BertConfig on the same batch (16 x 128 tokens of the shared CLUE corpus, 15% of the
tokens masked, as in BERT's data): the baseline is the stock `BertForMaskedLM` whose head projects
every position onto the 21,128-word vocabulary; ours is `bertwwm.modeling.model.PretrainingModel` (head only at the
masked positions) with `bertwwm.modeling.optim.build_optimizer("adamw")`. The bf16 case runs ours under CPU bf16
autocast and compares it with the fp32 baseline (the issue's "3x for small with bf16"); the bf16 baseline
is printed too. MFU counts the FLOPs the step needs (encoder + head at masked positions, x3 for
forward+backward) against this CPU's matmul peak (measured here, and the issue's 174 / 390 GFLOP/s).

Usage: python benchmarks/train_step.py [--threads 2] [--steps 5] [--configs small:fp32,base:fp32,small:bf16]
The case small:bf16:compile is ours under torch.compile (`pretrain --compile`); compiling takes about half a
minute here and is not timed. A case with `:corpus` runs ours with the MLM softmax over only the tokens of the
text the batch comes from (`[model] decoder_vocab = "corpus"`) and also times ours over the full vocabulary:
`ratio_vs_full_vocab`.
The final line is JSON: {"cases": [{"config", "dtype", "ours", "baseline", "ratio", ...}, ...]}
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bertwwm.modeling.model import PretrainingModel, bert_config, build_model
from bertwwm.modeling.optim import build_optimizer
from bertwwm.text.tokens import chinese_tokenizer

ISSUE_PEAK = {"fp32": 174e9, "bf16": 390e9}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "corpus" / "clue-small-sample.txt"


def corpus_ids_of_text() -> list[int]:
    tok = chinese_tokenizer()
    return tok(SHARED.read_text(encoding="utf-8")[:200_000], add_special_tokens=False, verbose=False)["input_ids"]


def corpus_token_ids() -> torch.Tensor:
    """The distinct tokens of the text the batch is drawn from (what `decoder_vocab = "corpus"` scores)."""
    return torch.tensor(sorted(set(corpus_ids_of_text())))


def make_batch(batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    ids = corpus_ids_of_text()
    rng = np.random.default_rng(seed)
    body = length - 2
    rows = []
    for b in range(batch):
        start = b * body
        rows.append([101] + ids[start:start + body] + [102])
    input_ids = torch.tensor(rows)
    labels = torch.full_like(input_ids, -100)
    n_mask = round(0.15 * length)  # 19 of 128, Google's max_predictions is 20
    for b in range(batch):
        pos = rng.choice(np.arange(1, length - 1), size=n_mask, replace=False)
        labels[b, pos] = input_ids[b, pos]
        input_ids[b, pos] = 103
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids), "labels": labels}


def step_flops(cfg, batch: int, length: int, predicted: int, scored: int | None = None) -> float:
    """Matmul FLOPs of one training step (forward x 3) with the head at `predicted` positions, scoring
    `scored` tokens (default: the whole vocabulary)."""
    h, i, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, scored or cfg.vocab_size
    tokens = batch * length
    encoder = layers * (tokens * 2 * (4 * h * h + 2 * h * i) + batch * 2 * 2 * length * length * h)
    head = predicted * 2 * (h * h + h * v)
    return 3.0 * (encoder + head)


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def time_interleaved(fns: list, steps: int) -> list[float]:
    """Median seconds per call of each fn, calls interleaved so that load from other processes on a
    shared machine hits every contender alike."""
    for fn in fns:  # warm-up: allocator, oneDNN kernels
        fn()
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def run_case(name: str, dtype: str, batch: dict, steps: int, compiled: bool = False,
             corpus_ids: torch.Tensor | None = None) -> dict:
    cfg = bert_config(name)
    tokens = batch["input_ids"].numel()
    predicted = int((batch["labels"] != -100).sum())
    bf16 = dtype == "bf16"

    def training_step(forward, optimizer, autocast: bool):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
                loss = forward(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return step

    def ours(restrict: bool):
        torch.manual_seed(0)
        model = PretrainingModel(build_model(cfg, nsp=False)).train()
        if restrict:
            model.restrict_output(corpus_ids)
        # `bertwwm pretrain --compile` does exactly this (dynamic: the number of masked tokens varies per batch).
        forward = torch.compile(model, dynamic=True) if compiled else model
        return training_step(forward, build_optimizer(model.hf, "adamw", lr=1e-4), bf16)

    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    base_model = BertForMaskedLM(cfg).train()
    base_opt = torch.optim.AdamW(base_model.parameters(), lr=1e-4)

    # fp32 baseline: the issue's baseline for every case
    contenders = [ours(restrict=corpus_ids is not None), training_step(base_model, base_opt, False)]
    if bf16:
        contenders.append(training_step(base_model, base_opt, True))
    if corpus_ids is not None:
        contenders.append(ours(restrict=False))  # ours over the full vocabulary
    t_ours, t_base, *t_rest = time_interleaved(contenders, steps)
    case = {"config": name, "dtype": dtype, "compile": compiled, "ours": tokens / t_ours, "baseline": tokens / t_base,
            "ratio": t_base / t_ours, "baseline_dtype": "fp32"}
    flops = step_flops(cfg, batch["input_ids"].shape[0], batch["input_ids"].shape[1], predicted,
                       None if corpus_ids is None else len(corpus_ids))
    case["ours_gflops"] = flops / t_ours / 1e9
    case["mfu_vs_issue_peak"] = flops / t_ours / ISSUE_PEAK[dtype]
    case["baseline_mfu_vs_issue_peak"] = flops / t_base / ISSUE_PEAK["fp32"]
    if corpus_ids is not None:
        case["decoder_tokens"] = len(corpus_ids)
        case["ours_full_vocab"] = tokens / t_rest[-1]
        case["ratio_vs_full_vocab"] = t_rest[-1] / t_ours
    if bf16:
        t_base_bf16 = t_rest[0]
        case["baseline_bf16"] = tokens / t_base_bf16
        case["ratio_vs_baseline_bf16"] = t_base_bf16 / t_ours
    return case


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--configs", default="small:fp32,base:fp32,small:bf16,small:bf16:compile,tiny:fp32:corpus",
                   help="config:dtype[:compile][:corpus] items; compile = ours under torch.compile, as pretrain "
                        "--compile; corpus = ours with decoder_vocab = corpus, also timed against ours without")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(16, 128)
    corpus_ids = corpus_token_ids()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"measured matmul peak ({args.threads} threads): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s (issue: 174 / 390)", file=sys.stderr)
    cases = []
    for item in args.configs.split(","):
        name, dtype, *flags = item.split(":")
        case = run_case(name, dtype, batch, args.steps, compiled="compile" in flags,
                        corpus_ids=corpus_ids if "corpus" in flags else None)
        case["mfu_vs_measured_peak"] = case["ours_gflops"] * 1e9 / peaks[dtype]
        cases.append(case)
        label = f"{name} {dtype}" + (" compiled" if case["compile"] else "") + (" corpus" if "corpus" in flags else "")
        print(f"{label:19s}: ours {case['ours']:8.0f} tok/s  baseline(fp32) {case['baseline']:8.0f} tok/s  "
              f"ratio {case['ratio']:.2f}x  ours {case['ours_gflops']:.0f} GFLOP/s "
              f"(MFU {case['mfu_vs_issue_peak']:.0%} of issue peak)", file=sys.stderr)
    print(json.dumps({"cases": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()}
                                for c in cases],
                      "measured_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
                      "threads": args.threads, "batch": 16, "seq": 128}))


if __name__ == "__main__":
    main()
