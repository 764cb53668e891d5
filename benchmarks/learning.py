"""Does pretraining learn within a wall-time budget? The small-budget recipe against bertwwm 0.1's `tiny-cpu`.

Both runs get the same wall time on the same machine in one process, the same shipped corpus (its last
documents held out) and the same held-out masks (whole words, 15%). Each is a real `bertwwm pretrain` run
under `--time-budget`; the held-out MLM accuracy and loss are those the runs log, next to the unigram
reference (the loss of predicting every masked token from its frequency: the plateau).

    python benchmarks/learning.py                 # 4 minutes per recipe
    python benchmarks/learning.py --budget 60s    # a quick look

Prints one JSON line: {"budget_s", "new": {...}, "old": {...}, "acc_ratio"}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_RECIPE = REPO / "benchmarks" / "recipes" / "tiny-cpu-0.1.toml"
NEW_RECIPE = "tiny-cpu-fast"
HELDOUT_DOCS = 20  # documents of the shipped corpus kept out of pretraining


def split_corpus(source: Path, folder: Path) -> tuple[Path, Path]:
    """The shipped corpus' documents less the last HELDOUT_DOCS, and those as the held-out text."""
    docs = [d for d in gzip.open(source, "rt", encoding="utf-8").read().split("\n\n") if d.strip()]
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    train.write_text("\n\n".join(docs[:-HELDOUT_DOCS]) + "\n", encoding="utf-8")
    heldout.write_text("\n\n".join(docs[-HELDOUT_DOCS:]) + "\n", encoding="utf-8")
    return train, heldout


def last_eval(run: Path) -> dict:
    from bertwwm.pretrain.heldout import last_heldout

    last = last_heldout(run)
    return {"heldout_mlm_acc": round(last["mlm_acc"], 4), "heldout_mlm_loss": round(last["mlm_loss"], 4),
            "unigram_loss": round(last["unigram_loss"], 4), "unigram_acc": round(last["unigram_acc"], 4),
            "steps": last["step"], "seconds": round(last["elapsed_s"], 1)}


def main(argv: list[str] | None = None) -> int:
    from bertwwm.demo import sample_corpus
    from bertwwm.data.prepare import prepare
    from bertwwm.pretrain import config_from_recipe, load_recipe, parse_duration, pretrain

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="4m", help="wall time per recipe (default 4m)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    args = p.parse_args(argv)
    budget = parse_duration(args.budget)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bertwwm-learning-"))
    try:
        train, heldout = split_corpus(sample_corpus(), work)
        results = {}
        for name, recipe in (("new", NEW_RECIPE), ("old", str(OLD_RECIPE))):
            cfg = config_from_recipe(*load_recipe(recipe), out=str(work / f"run-{name}"), seed=args.seed,
                                     threads=args.threads, time_budget=budget, progress=False)
            length = cfg.phases[0].max_seq_length
            data = work / f"data-{name}-{length}"
            if not data.exists():
                static = cfg.data_masking == "static" or cfg.nsp
                prepare([train], data, max_seq_length=length, nsp=cfg.nsp, dynamic=not static,
                        dupe_factor=2 if static else None, progress=False, seed=args.seed)
            held = work / f"heldout-{length}"
            if not held.exists():
                prepare([heldout], held, max_seq_length=length, nsp=False, dynamic=True, progress=False)
            cfg.data, cfg.heldout, cfg.eval_instances = str(data), str(held), 512
            cfg.eval_every = 10**9  # only the final evaluation: no evaluation time inside the budget
            print(f"{name}: {recipe} for {budget:.0f}s ...", file=sys.stderr, flush=True)
            pretrain(cfg)
            results[name] = {"recipe": Path(recipe).stem, **last_eval(Path(cfg.out))}
        print(json.dumps({"benchmark": "learning", "budget_s": budget, "machine": platform.processor() or
                          platform.machine(), "threads": args.threads, "new": results["new"], "old": results["old"],
                          "acc_ratio": round(results["new"]["heldout_mlm_acc"] /
                                             max(results["old"]["heldout_mlm_acc"], 1e-9), 2)}))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
