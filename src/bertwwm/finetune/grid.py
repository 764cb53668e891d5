"""`--lr-grid`: fine-tune once per learning rate and keep the rate with the best mean dev score.

Each rate is a normal run folder OUT/lr-RATE (resumable like any other); OUT/grid.json says what each rate
scored and which won, and OUT/results.jsonl holds the winner's seeds, so `bertwwm report OUT` shows it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_write_json
from bertwwm.finetune.runs import finetune, write_results
from bertwwm.tasks.registry import Task


def finetune_grid(task: str | Task, model: str, out: str | Path, learning_rates: Sequence[float],
                  seeds: int | Sequence[int] = 10, **kwargs) -> dict:
    """Fine-tune once per learning rate (each a normal run folder OUT/lr-RATE) and choose the rate with the best
    mean dev score over seeds, as the report chose its rates. OUT/grid.json says what each rate scored and which
    won; OUT/results.jsonl holds the winner's seeds, so `bertwwm report OUT` shows it. The winner's dev score
    is optimistic (it chose the rate); its test score is not."""
    if not learning_rates or any(lr <= 0 for lr in learning_rates):
        raise UserError("--lr-grid needs one or more positive learning rates, e.g. 1e-4,3e-4,1e-3")
    if kwargs.get("learning_rate") is not None:
        raise UserError("give either --lr or --lr-grid, not both")
    kwargs.pop("learning_rate", None)
    out = Path(out)
    rows, chosen = [], None
    for lr in sorted(set(learning_rates)):
        folder = out / f"lr-{lr:g}"
        results = finetune(task, model, folder, seeds=seeds, learning_rate=lr, **kwargs)
        dev = [r["dev_score"] for r in results]
        row = {"learning_rate": lr, "dev_mean": float(np.mean(dev)), "dev_max": float(np.max(dev)),
               "dev_std": float(np.std(dev, ddof=1)) if len(dev) > 1 else 0.0, "seeds": len(dev),
               "folder": folder.name}
        rows.append(row)
        if chosen is None or row["dev_mean"] > chosen[0]["dev_mean"]:
            chosen = (row, results)
    grid = {"task": chosen[1][0]["task"], "model": model, "chosen_learning_rate": chosen[0]["learning_rate"],
            "chosen_by": "mean dev score over seeds", "grid": rows}
    atomic_write_json(out / "grid.json", grid)
    write_results(out, chosen[1])
    return grid


def grid_summary(grid: dict) -> str:
    """One line for stderr: the winning rate, its mean dev score, and what the others scored."""
    best = grid["chosen_learning_rate"]
    others = ", ".join(f"{r['learning_rate']:g}: {r['dev_mean']:.2f}" for r in grid["grid"]
                       if r["learning_rate"] != best)
    row = next(r for r in grid["grid"] if r["learning_rate"] == best)
    return (f"lr grid: {best:g} won (mean dev {row['dev_mean']:.2f} over {row['seeds']} seed(s))"
            + (f"; {others}" if others else ""))
