"""`bertwwm demo` (what `make demo` runs): the report's pipeline in miniature on data shipped in the package.

Steps so far: (1) the report's whole-word-masking example table, (2) WWM and character-masked pretraining
data prepared from the shipped corpus sample, then inspected. Every output lands in one run folder; a second
run reuses finished steps (prepare is resumable and skips a folder that is already complete).
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources
from pathlib import Path

EXAMPLE = "使用语言模型来预测下一个词的probability。"


def sample_corpus() -> Path:
    return Path(str(resources.files("bertwwm") / "resources" / "corpus" / "prc-laws-sample.txt.gz"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--workers", type=int, default=2, help="prepare worker processes (default: 2)")
    parser.add_argument("--seed", type=int, default=12345)


def run(args: argparse.Namespace) -> int:
    demo(Path(args.out), workers=args.workers, seed=args.seed)
    return 0


def demo(out: Path, *, workers: int = 2, seed: int = 12345) -> Path:
    from bertwwm.inspect_data import inspect_dataset
    from bertwwm.prepare import prepare
    from bertwwm.show_masking import format_rows, show_masking

    out.mkdir(parents=True, exist_ok=True)
    _step(1, "whole word masking, as in the report's Table 1")
    example = show_masking(EXAMPLE, seed=seed)
    print(format_rows(example))
    (out / "show-masking.json").write_text(json.dumps(example, ensure_ascii=False, indent=1), encoding="utf-8")

    corpus = sample_corpus()
    for masking in ("wwm", "char"):
        _step(2, f"prepare {masking}-masked data (seq 128, NSP, static masking x2) from {corpus.name}")
        t0 = time.perf_counter()
        manifest = prepare([corpus], out / f"data-{masking}", masking=masking, max_seq_length=128,
                           dupe_factor=2, workers=workers, seed=seed)
        counts = manifest["counts"]
        print(f"  {counts['instances']:,} instances, {counts['tokens']:,} tokens "
              f"in {time.perf_counter() - t0:.1f}s -> {out / f'data-{masking}'}")
    _step(3, "a few whole-word-masked instances")
    print(inspect_dataset(out / "data-wwm", n=2))
    print(f"\ndemo finished; everything is in {out.resolve()}")
    return out


def _step(n: int, title: str) -> None:
    print(f"\n== step {n}: {title}", flush=True)
