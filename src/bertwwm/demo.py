"""`bertwwm demo` (what `make demo` runs): the BERT-wwm report's pipeline in miniature, on data shipped in the package.

1. print the report's whole-word-masking example (Table 1);
2. prepare whole-word-masked and character-masked pretraining data from the shipped corpus sample;
3. pretrain two tiny models with equal budgets (same steps, batch, seed, data order); masking is the only
   difference;
4. fine-tune each on ChnSentiCorp and CMRC 2018 slices over several seeds;
5. print the report-style "max (mean)" table and save PNGs of the loss curves and of the per-seed scores.

Every output lands in one run folder. Each step skips when its output is complete (prepare, pretrain and
finetune are themselves resumable), so a second run, or a run after an interruption, reuses finished work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bertwwm.errors import UserError
from bertwwm.fileio import atomic_write_json, atomic_write_text

EXAMPLE = "使用语言模型来预测下一个词的probability。"
POLICIES = ("wwm", "char")
TASKS = ("chnsenticorp", "cmrc2018")
STATE_FILE = "demo.json"


@dataclass(frozen=True)
class Budget:
    """How much work the demo does. Both models always get the same pretraining budget."""

    name: str
    corpus_chars: int | None        # characters of the shipped corpus sample to use (None: all 2.0M)
    dupe_factor: int                # static masking: differently masked copies of the corpus
    pretrain_steps: int
    pretrain_batch: int
    seeds: int
    # fine-tuning: (train examples, dev examples) taken from the start of the shipped slices (None: all)
    chnsenticorp: tuple[int | None, int | None]
    cmrc2018: tuple[int | None, int | None]
    chnsenticorp_max_len: int = 128
    cmrc2018_max_len: int = 256
    chnsenticorp_epochs: float = 3.0
    cmrc2018_epochs: float = 2.0
    # A 2-layer model trained for minutes needs larger steps than the report's 2e-5 / 3e-5 for BERT-base
    # (with those it stays at the majority class).
    chnsenticorp_lr: float = 5e-4
    cmrc2018_lr: float = 3e-4
    eval_every: int = 50


BUDGETS = {
    # `make demo`: ~10 minutes on an idle 2-core CPU.
    "full": Budget("full", corpus_chars=None, dupe_factor=2, pretrain_steps=200, pretrain_batch=32, seeds=3,
                   chnsenticorp=(1000, 200), cmrc2018=(300, 200)),
    # `bertwwm demo --quick`: the same steps on much less data, a few minutes.
    "quick": Budget("quick", corpus_chars=300_000, dupe_factor=1, pretrain_steps=60, pretrain_batch=16, seeds=3,
                    chnsenticorp=(400, 100), cmrc2018=(100, 60), cmrc2018_max_len=192, eval_every=20),
    # The test suite: every step once, in seconds.
    "test": Budget("test", corpus_chars=40_000, dupe_factor=1, pretrain_steps=4, pretrain_batch=8, seeds=1,
                   chnsenticorp=(32, 32), cmrc2018=(12, 12), chnsenticorp_max_len=64, cmrc2018_max_len=128,
                   chnsenticorp_epochs=1, cmrc2018_epochs=1, eval_every=2),
}


def sample_corpus() -> Path:
    return Path(str(resources.files("bertwwm") / "resources" / "corpus" / "prc-laws-sample.txt.gz"))


def task_data_dir() -> Path:
    """The shipped ChnSentiCorp and CMRC 2018 slices, in the layout `bertwwm finetune --data-dir` reads."""
    return Path(str(resources.files("bertwwm") / "resources" / "tasks"))


# ------------------------------------------------------------------------------------------------ steps


class Demo:
    """The run folder and its bookkeeping: which steps ran, which were reused, and how long each took."""

    def __init__(self, out: Path, budget: Budget, seed: int, workers: int, progress: bool):
        self.out, self.budget, self.seed, self.workers, self.progress = out, budget, seed, workers, progress
        self.started = time.perf_counter()
        self.steps: list[dict] = []

    def header(self, n: int, title: str) -> None:
        print(f"\n== step {n}/5 [{time.perf_counter() - self.started:6.1f}s] {title}", flush=True)

    def record(self, name: str, reused: bool, seconds: float, **extra) -> None:
        self.steps.append({"step": name, "reused": reused, "seconds": round(seconds, 2), **extra})
        note = "reused (already complete)" if reused else f"done in {seconds:.1f}s"
        print(f"  {name}: {note}", flush=True)


def _check_budget(out: Path, budget: Budget, seed: int) -> None:
    """One run folder holds one budget: mixing them would compare models trained differently."""
    path = out / STATE_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError("cannot read the demo's state file; delete it or choose another --out", path) from None
    if previous.get("budget") != _jsonable(dataclasses.asdict(budget)) or previous.get("seed") != seed:
        raise UserError(f"this folder holds a demo run with another budget or seed (budget "
                        f"{previous.get('budget', {}).get('name')!r}, seed {previous.get('seed')}); "
                        "choose another --out", path)


def _jsonable(value):
    return json.loads(json.dumps(value))


def _corpus(run: Demo) -> Path:
    """The shipped sample, or its first `corpus_chars` characters (whole documents) copied into the run folder."""
    budget = run.budget
    if budget.corpus_chars is None:
        return sample_corpus()
    target = run.out / f"corpus-{budget.corpus_chars}.txt"
    if target.is_file():
        return target
    import gzip

    kept, chars = [], 0
    with gzip.open(sample_corpus(), "rt", encoding="utf-8") as f:
        document: list[str] = []
        for line in f:
            document.append(line)
            chars += len(line)
            if not line.strip():  # a blank line ends a document
                kept.extend(document)
                document = []
                if chars >= budget.corpus_chars:
                    break
        else:
            kept.extend(document)
    atomic_write_text(target, "".join(kept))
    return target


def step_show_masking(run: Demo) -> None:
    from bertwwm.show_masking import format_rows, show_masking

    run.header(1, "whole word masking vs character masking, as in the report's Table 1")
    example = show_masking(EXAMPLE, seed=run.seed)
    table = format_rows(example)
    print(table)
    atomic_write_text(run.out / "show-masking.txt", table + "\n")


def step_prepare(run: Demo, policy: str) -> Path:
    from bertwwm.prepare import prepare
    from bertwwm.storage import read_manifest

    folder = run.out / f"data-{policy}"
    t0 = time.perf_counter()
    try:
        manifest = read_manifest(folder)
        reused = True
    except UserError:  # missing or unfinished: prepare resumes whatever an earlier run left
        corpus = _corpus(run)
        print(f"  preparing {policy}-masked data from {corpus.name} (max length 128, NSP, static masking "
              f"x{run.budget.dupe_factor}) -> {folder}", flush=True)
        manifest = prepare([corpus], folder, masking=policy, max_seq_length=128, nsp=True,
                           dupe_factor=run.budget.dupe_factor, workers=run.workers, seed=run.seed,
                           progress=run.progress)
        reused = False
    c = manifest["counts"]
    run.record(f"prepare {policy}", reused, time.perf_counter() - t0, instances=c["instances"], tokens=c["tokens"])
    print(f"  {c['instances']:,} instances, {c['tokens']:,} tokens", flush=True)
    return folder


def step_pretrain(run: Demo, policy: str, data: Path) -> Path:
    from bertwwm.pretrain import config_from_recipe, load_recipe, pretrain

    folder = run.out / f"pretrain-{policy}"
    final = folder / "final"
    t0 = time.perf_counter()
    if (final / "config.json").is_file():
        run.record(f"pretrain {policy}", True, time.perf_counter() - t0)
        return final
    b = run.budget
    import torch

    recipe, where = load_recipe("tiny-cpu")
    # Static masks come from the prepared data, so the masking policy lives there; `policy` is recorded for
    # clarity and data_masking="static" makes pretrain check that the data really carries its masks.
    cfg = config_from_recipe(recipe, where, out=str(folder), data=str(data), seed=run.seed, policy=policy,
                             data_masking="static", resume=True, progress=run.progress,
                             save_every=max(1, b.pretrain_steps // 2), eval_every=b.eval_every,
                             log_every=max(1, min(10, b.pretrain_steps // 4)),
                             eval_instances=min(256, 8 * b.pretrain_batch), threads=torch.get_num_threads())
    for phase in cfg.phases:
        phase.steps, phase.batch_size = b.pretrain_steps, b.pretrain_batch
    print(f"  tiny BERT (2 layers, hidden 128), {b.pretrain_steps} steps x batch {b.pretrain_batch} at length 128, "
          f"{policy}-masked data, seed {run.seed} -> {folder}", flush=True)
    final = pretrain(cfg)
    run.record(f"pretrain {policy}", False, time.perf_counter() - t0)
    return final


def step_finetune(run: Demo, task: str, policy: str, model: Path) -> Path:
    from bertwwm.finetune import finetune, read_results

    b = run.budget
    folder = run.out / f"finetune-{task}-{policy}"
    n_train, n_dev = getattr(b, task)
    t0 = time.perf_counter()
    seeds = list(range(1, b.seeds + 1))
    done = {r["seed"] for r in read_results(folder)}
    reused = set(seeds) <= done
    if reused:  # not even a settings check: a finished run folder stays reusable after being moved
        run.record(f"finetune {task} {policy}", True, time.perf_counter() - t0)
        return folder
    print(f"  {task} on the {policy} model: seeds {seeds[0]}..{seeds[-1]}, "
          f"{n_train or 'all'} train / {n_dev or 'all'} dev examples -> {folder}", flush=True)
    finetune(task, str(model.resolve()), folder, seeds=seeds, data_dir=task_data_dir(), save_model=False,
             progress=run.progress, epochs=getattr(b, f"{task}_epochs"), learning_rate=getattr(b, f"{task}_lr"),
             max_seq_length=getattr(b, f"{task}_max_len"), batch_size=32 if task == "chnsenticorp" else 16,
             max_train_examples=n_train, max_eval_examples=n_dev)
    run.record(f"finetune {task} {policy}", False, time.perf_counter() - t0)
    return folder


def plot_pretraining(runs: dict[str, Path], png: Path) -> Path:
    """Both models' MLM loss and accuracy on one figure (train and held-out), so the two curves compare directly."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.fileio import atomic_path
    from bertwwm.plot import read_metrics

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (policy, folder) in enumerate(runs.items()):
        for split, series in read_metrics(folder).items():
            style = dict(color=f"C{k}", linewidth=1.0, alpha=0.7) if split == "train" else \
                dict(color=f"C{k}", linewidth=2.0, marker="o", markersize=4)
            for key, ax in (("mlm_loss", ax_loss), ("mlm_acc", ax_acc)):
                if key in series:
                    ax.plot(*series[key], label=f"{policy} {split}", **style)
    ax_loss.set_title("MLM loss (on each model's own masks)")
    ax_acc.set_title("MLM accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("pretraining with equal budgets: whole word masking vs character masking")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return png


def step_report(run: Demo, pretrain_runs: dict[str, Path], finetune_runs: dict[tuple[str, str], Path]) -> str:
    from bertwwm.plot import plot_run
    from bertwwm.report import load_run, plot_runs, render_tables, summarize

    t0 = time.perf_counter()
    curves = [plot_run(folder) for folder in pretrain_runs.values()]  # RUN/curves.png, one per model
    loss_png = plot_pretraining(pretrain_runs, run.out / "pretrain-loss.png")
    rows = [(f"tiny BERT-{policy}" if policy == "wwm" else "tiny BERT (char)", summarize(load_run(folder)))
            for (task, policy), folder in finetune_runs.items()]
    table = render_tables(rows)
    scores_png = run.out / "finetune-scores.png"
    plot_runs(rows, scores_png)
    atomic_write_text(run.out / "results.md", _results_markdown(run, table))
    atomic_write_json(run.out / "results.json", [{"label": label, **s} for label, s in rows])
    run.record("report", False, time.perf_counter() - t0)
    print(table, end="")
    print(f"\n  PNGs: {loss_png.name} (both models' pretraining curves), {scores_png.name} (per-seed scores), "
          + ", ".join(str(p.relative_to(run.out)) for p in curves))
    return table


def _results_markdown(run: Demo, table: str) -> str:
    b = run.budget
    return (f"# bertwwm demo: whole word masking vs character masking ({b.name} budget)\n\n"
            f"Two tiny BERT models (2 layers, hidden 128) pretrained for {b.pretrain_steps} steps of "
            f"{b.pretrain_batch} sequences (length 128, seed {run.seed}) on the same corpus sample, one on "
            f"whole-word-masked data and one on character-masked data, then fine-tuned with {b.seeds} seed(s) "
            f"per task on the shipped slices (ChnSentiCorp: {b.chnsenticorp[0]} train / {b.chnsenticorp[1]} dev "
            f"examples, CMRC 2018: {b.cmrc2018[0]} train / {b.cmrc2018[1]} dev questions). Cells read \"max (mean)\" over seeds, as in the report, then the "
            f"standard deviation. Models this small and this briefly trained are far from the report's numbers; "
            f"the demo shows the pipeline, and `benchmarks/ablation.py` measures the comparison properly.\n\n"
            f"{table}\n![pretraining curves](pretrain-loss.png)\n\n![per-seed scores](finetune-scores.png)\n")


# ------------------------------------------------------------------------------------------------- API


def demo(out: str | Path = "runs/demo", *, budget: str | Budget = "full", seed: int = 12345, workers: int = 2,
         progress: bool = True) -> dict:
    """Run (or resume) the whole demo into `out`; returns the run's state (steps, reuse, timings, table).

    `budget` is "full" (what `make demo` runs), "quick", "test" (seconds; for the test suite) or a Budget.
    """
    if isinstance(budget, str):
        if budget not in BUDGETS:
            raise UserError(f"unknown demo budget {budget!r}; choose one of {', '.join(BUDGETS)}")
        budget = BUDGETS[budget]
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError("--out exists and is not a folder", out)
    _check_budget(out, budget, seed)
    out.mkdir(parents=True, exist_ok=True)
    run = Demo(out, budget, seed, workers, progress)
    from transformers.utils import logging as hf_logging

    # Loading a pretraining checkpoint into a task model always reports the dropped pretraining heads and
    # the new task head; expected here, and 12 such tables would bury the demo's own progress.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return _run_steps(run)
    finally:
        hf_logging.set_verbosity(verbosity)


def _run_steps(run: Demo) -> dict:
    out, budget = run.out, run.budget
    state = {"budget": dataclasses.asdict(budget), "seed": run.seed}
    atomic_write_json(out / STATE_FILE, state)
    print(f"bertwwm demo ({budget.name} budget) -> {out.resolve()}", flush=True)

    step_show_masking(run)
    run.header(2, "prepare whole-word-masked and character-masked pretraining data")
    data = {policy: step_prepare(run, policy) for policy in POLICIES}
    run.header(3, "pretrain two tiny models with equal budgets (masking is the only difference)")
    models = {policy: step_pretrain(run, policy, data[policy]) for policy in POLICIES}
    run.header(4, f"fine-tune each model on ChnSentiCorp and CMRC 2018, {budget.seeds} seed(s) each")
    finetuned = {(task, policy): step_finetune(run, task, policy, models[policy])
                 for task in TASKS for policy in POLICIES}
    run.header(5, "report: max (mean) over seeds, loss curves, per-seed scores")
    table = step_report(run, {p: m.parent for p, m in models.items()}, finetuned)

    total = time.perf_counter() - run.started
    state.update(out=str(out.resolve()), steps=run.steps, seconds=round(total, 1), table=table,
                 reused=[s["step"] for s in run.steps if s["reused"]])
    atomic_write_json(out / STATE_FILE, state)
    print(f"\ndemo finished in {total:.0f}s ({len(state['reused'])} step(s) reused); everything is in "
          f"{out.resolve()}  (results.md, pretrain-loss.png, finetune-scores.png)", flush=True)
    return state


# ------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo; rerun to resume)")
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes on less data (the same steps); use a separate --out")
    parser.add_argument("--workers", type=int, default=2, help="prepare worker processes (default: 2)")
    parser.add_argument("--seed", type=int, default=12345, help="pretraining and data seed (default 12345)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    out = args.out
    if args.quick and out == "runs/demo":
        out = "runs/demo-quick"
    demo(out, budget="quick" if args.quick else "full", seed=args.seed, workers=args.workers,
         progress=not args.no_progress)
    return 0

