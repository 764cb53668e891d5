"""`bertwwm plot RUN`: a run's loss and accuracy curves (train and held-out) from RUN/metrics.jsonl as PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bertwwm.core.errors import UserError

METRICS = "metrics.jsonl"
SERIES = ("mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc")
REFERENCES = ("unigram_loss", "unigram_acc")  # held-out records: the plateau, drawn as dashed lines


def read_metrics(run: str | Path) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{split: {metric: (steps, values)}} from RUN/metrics.jsonl (or a metrics file given directly)."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError("no metrics file: is this a `bertwwm pretrain` run folder?", path) from None
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            raise UserError("not a metrics record (JSON with a step)", path, n) from None
        split = record.get("split", "train")
        for key in SERIES + REFERENCES:
            value = record.get(key)
            if isinstance(value, (int, float)):
                steps, values = out.setdefault(split, {}).setdefault(key, ([], []))
                steps.append(step)
                values.append(float(value))
    if not out:
        raise UserError("the metrics file has no loss or accuracy records yet", path)
    return out


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw loss (left) and accuracy (right) against step; return the PNG path (default RUN/curves.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.core.fileio import atomic_path

    data = read_metrics(run)
    run = Path(run)
    target = Path(out) if out is not None else (run if run.is_dir() else run.parent) / "curves.png"
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"train": dict(linewidth=1.2, alpha=0.85), "eval": dict(linewidth=2.0, marker="o", markersize=3)}
    for split, series in sorted(data.items()):
        style = styles.get(split, {})
        for key, (steps, values) in series.items():
            ax = ax_loss if key.endswith("loss") else ax_acc
            if key in REFERENCES:
                ax.plot(steps, values, color="grey", linestyle="--", linewidth=1.2,
                        label=f"{key.replace('_', ' ')} (predict by frequency: the plateau)")
            else:
                ax.plot(steps, values, label=f"{split} {key.replace('_', ' ')}", **style)
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    highest = max((v for ln in ax_acc.lines for v in ln.get_ydata()), default=1.0)
    ax_acc.set_ylim(0, min(1.0, highest * 1.25 + 0.02))  # small accuracies stay readable
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(f"pretraining: {run.name if run.is_dir() else run.parent.name}")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return target


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a `bertwwm pretrain` run folder (or its metrics.jsonl)")
    parser.add_argument("--out", metavar="PNG", help="image to write (default RUN/curves.png)")


def run(args: argparse.Namespace) -> int:
    print(plot_run(args.run, args.out))
    return 0
