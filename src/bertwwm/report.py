"""`bertwwm report DIR...`: the report's "max (mean)" tables over seeds, the standard deviation, and a PNG.

Each DIR is a `bertwwm finetune` run folder (its results.jsonl). Runs are grouped by task; within a task
each run is one row, as in the BERT-wwm report: for every split and metric the cell reads "max (mean)",
followed by the standard deviation over seeds. The PNG shows every seed's score per run and split.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Sequence

from bertwwm.core.errors import UserError
from bertwwm.modeling.random_init import is_random_init
from bertwwm.tasks.registry import get_task

SPLITS = ("dev", "test")


EMPTY = "–"  # a group without examples (e.g. CJRC criminal in a civil-only file): not scored, not 0.0


def _value(metrics: dict, path: Sequence[str]) -> float | None:
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return None if metrics is None else float(metrics)


def summarize(results: list[dict]) -> dict:
    """{split: {metric: {"max", "mean", "std", "n"}}} over the seeds of one run (std: sample, 0 for one seed)."""
    if not results:
        return {}
    task = get_task(results[0]["task"])
    out: dict = {"task": task.name, "model": results[0]["model"], "seeds": len(results)}
    for split in SPLITS:
        rows = [r[split] for r in results if r.get(split)]
        if not rows:
            continue
        out[split] = {}
        for path in task.report_metrics:
            values = [v for v in (_value(m, path) for m in rows) if v is not None]
            if not values:
                continue
            out[split]["/".join(path)] = {
                "max": max(values), "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values),
                "values": values}
    return out


def read_results(out: str | Path) -> list[dict]:
    """The finished seeds of a `bertwwm finetune` run folder (its results.jsonl), [] when there are none."""
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError("corrupt results line", path, i + 1) from None
    return rows


def load_run(folder: str | Path) -> list[dict]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("run folder not found", folder)
    results = read_results(folder)
    if not results:
        raise UserError("no finished seeds (results.jsonl is missing or empty)", folder)
    tasks = {r["task"] for r in results}
    if len(tasks) > 1:
        raise UserError(f"results of several tasks in one folder: {', '.join(sorted(tasks))}", folder)
    return results


def render_tables(runs: list[tuple[str, dict]]) -> str:
    """Markdown tables, one per task; `runs` is [(row label, summarize(...)), ...]."""
    by_task: dict[str, list[tuple[str, dict]]] = {}
    for label, summary in runs:
        by_task.setdefault(summary["task"], []).append((label, summary))
    parts = []
    for task_name, rows in by_task.items():
        task = get_task(task_name)
        splits = [s for s in SPLITS if any(s in summary for _, summary in rows)]
        metric_names = ["/".join(p) for p in task.report_metrics]
        header = ["Model", "Seeds"]
        for split in splits:
            for m in metric_names:
                name = m.split("/")[-1].upper() if m != "accuracy" else "Acc"
                header += [f"{split.capitalize()} {name}", "sd"]
        lines = [f"### {task.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label, summary in rows:
            cells = [label, str(summary["seeds"])]
            for split in splits:
                for m in metric_names:
                    s = summary.get(split, {}).get(m)
                    cells += [f"{s['max']:.1f} ({s['mean']:.1f})", f"{s['std']:.2f}"] if s else [EMPTY, EMPTY]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _short(label: str) -> str:
    """A model path's last folder names, so tick labels stay readable."""
    parts = label.split("/")
    return "/".join(parts[-2:]) if len(label) > 24 else label


def plot_seed_scores(ax, x: float, stats: dict, color: str) -> None:
    """One column of a per-seed plot: every seed's score as a dot, the mean as a line, the max as ^."""
    values = stats["values"]
    ax.scatter([x] * len(values), values, s=18, alpha=0.7, color=color)
    ax.hlines([stats["mean"]], x - 0.3, x + 0.3, color="k", linewidth=1)
    ax.scatter([x], [stats["max"]], marker="^", color="k", s=30)


def plot_runs(runs: list[tuple[str, dict]], png: str | Path) -> None:
    """One panel per task: every seed's main score, per run and split, with max and mean marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.core.fileio import atomic_path

    by_task: dict[str, list[tuple[str, dict]]] = {}
    for label, summary in runs:
        by_task.setdefault(summary["task"], []).append((label, summary))
    fig, axes = plt.subplots(1, len(by_task), figsize=(max(5, 3.2 * len(runs)), 4.2), squeeze=False)
    for ax, (task_name, rows) in zip(axes[0], by_task.items()):
        task = get_task(task_name)
        main = "/".join(task.main_metric) if "/".join(task.main_metric) in rows[0][1].get("dev", {}) else None
        main = main or "/".join(task.report_metrics[-1])
        ticks, labels = [], []
        for i, (label, summary) in enumerate(rows):
            for j, split in enumerate(SPLITS):
                stats = summary.get(split, {}).get(main)
                if not stats:
                    continue
                x = i * 3 + j
                plot_seed_scores(ax, x, stats, f"C{j}")
                ticks.append(x)
                labels.append(f"{_short(label)}\n{split}")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_title(f"{task.title}: {main} per seed\n(line = mean, ^ = max)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def report(dirs: Sequence[str | Path], png: str | Path | None = None) -> tuple[str, list[tuple[str, dict]]]:
    runs = []
    for d in dirs:
        summary = summarize(load_run(d))
        runs.append([summary["model"], summary])
    for r in runs:
        if is_random_init(str(r[1]["model"])):
            r[0] = f"{r[0]} (random init)"
            r[1]["control"] = True
    keys = [(r[1]["task"], r[0]) for r in runs]
    for i, d in enumerate(dirs):  # two runs of one model on one task (e.g. other lr): add the folder name
        if keys.count(keys[i]) > 1:
            runs[i][0] = f"{runs[i][0]} ({Path(d).name})"
    runs = [tuple(r) for r in runs]
    if png is not None:
        plot_runs(runs, png)
    return render_tables(runs), runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run folders written by `bertwwm finetune`")
    parser.add_argument("--png", help="per-seed distribution plot (default: DIR/report.png of the first DIR)")
    parser.add_argument("--json", action="store_true", help="print the summaries as JSON lines instead")


def run(args: argparse.Namespace) -> int:
    png = args.png or str(Path(args.dirs[0]) / "report.png")
    table, runs = report(args.dirs, png)
    if args.json:
        for label, summary in runs:
            print(json.dumps({"label": label, **summary}, ensure_ascii=False))
    else:
        print(table, end="")
        print(f"\nper-seed plot: {png}")
    return 0
