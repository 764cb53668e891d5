"""`bertwwm demo` (what `make demo` runs): the BERT-wwm report's pipeline in miniature, on data shipped in the package.

1. print the report's whole-word-masking example (Table 1);
2. prepare the shipped corpus sample once (token ids and word starts; masks are drawn at training time, so
   both models see the same instances in the same order and masking is the only difference);
3. pretrain two tiny models under equal wall-time budgets, one with whole word masking and one with
   character masking, and write the same model without pretraining (the random-init control: the very
   weights both runs start from);
4. fine-tune all three on ChnSentiCorp and CMRC 2018 slices over several seeds;
5. print the report-style "max (mean)" table with an honest reading, and save PNGs of the pretraining curves
   (held-out MLM loss against the unigram reference) and of the per-seed scores.

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

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_write_json, atomic_write_text

EXAMPLE = "使用语言模型来预测下一个词的probability。"
POLICIES = ("wwm", "char")
CONTROL = "random"  # the models the table compares: POLICIES, then the random-init control
TASKS = ("chnsenticorp", "cmrc2018")
STATE_FILE = "demo.json"
RECIPE = "tiny-cpu-fast"
LABELS = {"wwm": "tiny BERT-wwm", "char": "tiny BERT (char masking)", CONTROL: "tiny BERT, random init (no pretraining)"}


@dataclass(frozen=True)
class Budget:
    """How much work the demo does. Both pretrained models always get the same budget."""

    name: str
    corpus_chars: int | None        # characters of the shipped corpus sample to use (None: all)
    pretrain_seconds: float         # wall time of the pretraining step: all of it for each run when the runs go
                                    # side by side (a core each), an equal share each when one after the other
    seeds: int
    # fine-tuning: (train examples, dev examples): stratified samples of the shipped slices (None: all)
    chnsenticorp: tuple[int | None, int | None]
    cmrc2018: tuple[int | None, int | None]
    chnsenticorp_max_len: int = 128
    cmrc2018_max_len: int = 256
    cmrc2018_epochs: float = 2.0
    pretrain_max_steps: int | None = None  # the test budget stops on steps, not time, to be CPU-independent
    eval_every: int = 200


BUDGETS = {
    # `make demo`: about 14 minutes on an idle 2-core CPU.
    "full": Budget("full", corpus_chars=None, pretrain_seconds=400, seeds=3,
                   chnsenticorp=(None, None), cmrc2018=(300, None)),
    # `bertwwm demo --quick`: the same steps with less of everything, a few minutes.
    "quick": Budget("quick", corpus_chars=600_000, pretrain_seconds=120, seeds=2,
                    chnsenticorp=(500, 100), cmrc2018=(150, 60), cmrc2018_max_len=192, eval_every=100),
    # The test suite: every step once, in seconds.
    "test": Budget("test", corpus_chars=40_000, pretrain_seconds=3600, pretrain_max_steps=4, seeds=1,
                   chnsenticorp=(32, 32), cmrc2018=(12, 12), chnsenticorp_max_len=64, cmrc2018_max_len=128,
                   eval_every=2),
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
        self.pretrain_parallel = False  # set by step_pretrain_all

    def pretrain_seconds(self) -> float:
        """Each pretraining run's wall-time budget."""
        share = 1 if self.pretrain_parallel else len(POLICIES)
        return self.budget.pretrain_seconds / share

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


def _recipe():
    from bertwwm.pretrain import config_from_recipe, load_recipe

    return config_from_recipe(*load_recipe(RECIPE))


def step_show_masking(run: Demo) -> None:
    from bertwwm.data.show_masking import format_rows, show_masking

    run.header(1, "whole word masking vs character masking, as in the report's Table 1")
    example = show_masking(EXAMPLE, seed=run.seed)
    table = format_rows(example)
    print(table)
    atomic_write_text(run.out / "show-masking.txt", table + "\n")


def step_prepare(run: Demo) -> Path:
    from bertwwm.data.prepare import prepare
    from bertwwm.data.storage import read_manifest

    folder = run.out / "data"
    length = _recipe().phases[0].max_seq_length
    t0 = time.perf_counter()
    try:
        manifest = read_manifest(folder)
        reused = True
    except UserError:  # missing or unfinished: prepare resumes whatever an earlier run left
        corpus = _corpus(run)
        print(f"  segmenting and tokenising {corpus.name} once (max length {length}, no NSP; masks are drawn "
              f"per batch, so both models see the same instances) -> {folder}", flush=True)
        manifest = prepare([corpus], folder, max_seq_length=length, nsp=False, dynamic=True, workers=run.workers,
                           seed=run.seed, progress=run.progress)
        reused = False
    c = manifest["counts"]
    run.record("prepare", reused, time.perf_counter() - t0, instances=c["instances"], tokens=c["tokens"])
    print(f"  {c['instances']:,} instances, {c['tokens']:,} tokens", flush=True)
    return folder


def step_pretrain_all(run: Demo, data: Path, parallel: bool | None = None) -> dict[str, Path]:
    """Pretrain one model per policy. With a core per run (and a wall-time budget) the runs go side by side,
    one thread each: each gets the whole budget on a core of its own, which for a model this small gives more
    steps than two threads for half the time (a 2-layer, hidden-128 step gains little from a second thread),
    and the two runs meet the same machine load. Otherwise one after the other, with every thread."""
    import torch

    if parallel is None:
        parallel = run.budget.pretrain_max_steps is None and available_cores() >= len(POLICIES)
    run.pretrain_parallel = parallel
    if all((run.out / f"pretrain-{policy}" / "final" / "config.json").is_file() for policy in POLICIES):
        parallel = False  # both finished earlier: nothing to run
    if not parallel:
        return {policy: step_pretrain(run, policy, data, threads=torch.get_num_threads()) for policy in POLICIES}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    print(f"  {len(POLICIES)} runs side by side, one core each", flush=True)
    # spawn, not fork: the parent has torch's thread pools running, which a forked child would inherit broken.
    with ProcessPoolExecutor(len(POLICIES), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {policy: pool.submit(_pretrain_child, run, policy, data) for policy in POLICIES}
        _watch(run, futures)
        models = {}
        for policy, future in futures.items():
            models[policy], records = future.result()
            run.steps.extend(records)
    return models


def _pretrain_child(run: Demo, policy: str, data: Path) -> tuple[Path, list[dict]]:
    """One policy's run in a worker process: its model and the step records it made (the parent keeps them)."""
    from bertwwm.finetune import quiet_progress_bars

    quiet_progress_bars()
    before = len(run.steps)
    run.progress = False  # the parent draws one bar for both
    final = step_pretrain(run, policy, data, threads=1)
    return final, run.steps[before:]


def _watch(run: Demo, futures: dict) -> None:
    """A progress bar over the wall-time budget while the runs go, with each run's step and held-out accuracy."""
    from concurrent.futures import FIRST_EXCEPTION, wait

    from bertwwm.pretrain.heldout import last_heldout

    bar = None
    if run.progress:
        from tqdm import tqdm

        bar = tqdm(total=round(run.budget.pretrain_seconds), desc="pretrain " + " + ".join(futures), unit="s",
                   dynamic_ncols=True)
    started = time.perf_counter()
    while wait(list(futures.values()), timeout=2, return_when=FIRST_EXCEPTION).not_done:
        if any(f.done() and f.exception() is not None for f in futures.values()):
            break
        if bar is not None:
            bar.update(max(0, min(round(time.perf_counter() - started), bar.total) - bar.n))
            last = {p: last_heldout(run.out / f"pretrain-{p}") for p in futures}
            bar.set_postfix({p: f"step {r.get('step', 0)} acc {r.get('mlm_acc', 0):.3f}" for p, r in last.items()},
                            refresh=False)
    if bar is not None:
        bar.close()


def available_cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def step_pretrain(run: Demo, policy: str, data: Path, threads: int) -> Path:
    from bertwwm.pretrain import config_from_recipe, load_recipe, pretrain, scale_steps

    folder = run.out / f"pretrain-{policy}"
    final = folder / "final"
    t0 = time.perf_counter()
    if (final / "config.json").is_file():
        run.record(f"pretrain {policy}", True, time.perf_counter() - t0)
        return final
    b = run.budget
    timed = b.pretrain_max_steps is None
    cfg = config_from_recipe(*load_recipe(RECIPE), out=str(folder), data=str(data), seed=run.seed, policy=policy,
                             resume=folder.is_dir(), progress=run.progress, eval_every=b.eval_every,
                             save_every=10**9 if timed else max(1, b.pretrain_max_steps // 2),
                             time_budget=run.pretrain_seconds() if timed else None, threads=threads)
    if not timed:
        scale_steps(cfg, b.pretrain_max_steps)
    what = f"{run.pretrain_seconds():.0f} s of wall time" if timed else f"{b.pretrain_max_steps} steps"
    print(f"  tiny BERT (2 layers, hidden 128) from random init, recipe {RECIPE}, {policy} masking, {what}, "
          f"{threads} thread(s), seed {run.seed} -> {folder}", flush=True)
    final = pretrain(cfg)
    run.record(f"pretrain {policy}", False, time.perf_counter() - t0)
    return final


def step_control(run: Demo) -> Path:
    """The random-init control: the recipe's model built under the same seed, i.e. the pretraining runs'
    starting weights, written as a model folder and never trained."""
    from bertwwm.modeling.init_model import init_model

    folder = run.out / "random-init"
    t0 = time.perf_counter()
    reused = (folder / "config.json").is_file()
    if not reused:
        init_model(folder, preset=_recipe().preset, seed=run.seed)
    run.record("random-init control", reused, time.perf_counter() - t0)
    return folder


def step_finetune(run: Demo, task: str, name: str, model: Path) -> Path:
    from bertwwm.finetune import finetune, read_results

    b = run.budget
    folder = run.out / f"finetune-{task}-{name}"
    n_train, n_dev = getattr(b, task)
    t0 = time.perf_counter()
    seeds = list(range(1, b.seeds + 1))
    done = {r["seed"] for r in read_results(folder)}
    if set(seeds) <= done:  # not even a settings check: a finished run folder stays reusable after being moved
        run.record(f"finetune {task} {name}", True, time.perf_counter() - t0)
        return folder
    print(f"  {task} on {LABELS[name]}: seeds {seeds[0]}..{seeds[-1]}, {n_train or 'all'} train / "
          f"{n_dev or 'all'} dev examples, learning rate and epochs by model size -> {folder}", flush=True)
    finetune(task, str(model.resolve()), folder, seeds=seeds, data_dir=task_data_dir(), save_model=False,
             progress=run.progress, max_seq_length=getattr(b, f"{task}_max_len"),
             batch_size=16, max_train_examples=n_train, max_eval_examples=n_dev,
             epochs=b.cmrc2018_epochs if task == "cmrc2018" else None)
    run.record(f"finetune {task} {name}", False, time.perf_counter() - t0)
    return folder


def pretraining_summary(folder: Path) -> dict:
    """The last held-out evaluation of a pretraining run: MLM accuracy and loss, and the unigram reference."""
    from bertwwm.pretrain.heldout import last_heldout

    last = last_heldout(folder)
    if not last:
        raise UserError("the pretraining run has no held-out evaluation", folder / "metrics.jsonl")
    return {"heldout_mlm_acc": last["mlm_acc"], "heldout_mlm_loss": last["mlm_loss"],
            "unigram_loss": last["unigram_loss"], "unigram_acc": last["unigram_acc"], "steps": last["step"],
            "seconds": last["elapsed_s"]}


def plot_pretraining(runs: dict[str, Path], png: Path) -> Path:
    """Both models' held-out MLM loss and accuracy against their unigram references, so a plateau (a curve on
    the reference line) and learning (a curve below it) read at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.core.fileio import atomic_path

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for k, (policy, folder) in enumerate(runs.items()):
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        for split, style in (("train", dict(linewidth=1.0, alpha=0.5)), ("eval", dict(linewidth=2.0, marker="o",
                                                                                      markersize=3))):
            rows = [r for r in records if r.get("split") == split]
            steps = [r["step"] for r in rows]
            ax_loss.plot(steps, [r["mlm_loss"] for r in rows], color=f"C{k}", label=f"{policy} {split}", **style)
            ax_acc.plot(steps, [r["mlm_acc"] for r in rows], color=f"C{k}", label=f"{policy} {split}", **style)
        evals = [r for r in records if r.get("split") == "eval"]
        if evals:
            ax_loss.axhline(evals[-1]["unigram_loss"], color=f"C{k}", linestyle="--", linewidth=1,
                            label=f"{policy} unigram reference (the plateau)")
            ax_acc.axhline(evals[-1]["unigram_acc"], color=f"C{k}", linestyle="--", linewidth=1,
                           label=f"{policy} unigram reference")
    ax_loss.set_title("MLM loss (train: the training masks; eval: held-out, 15%)")
    ax_acc.set_title("MLM accuracy")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("pretraining under equal wall-time budgets: whole word masking vs character masking")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return png


def _mean_sd(summary: dict) -> tuple[float, float, int]:
    """Mean, standard deviation and count of a run's dev headline metric (accuracy, or F1 for CMRC 2018)."""
    task = summary["task"]
    from bertwwm.tasks.registry import get_task

    metric = "/".join(get_task(task).report_metrics[-1])
    s = summary["dev"][metric]
    return s["mean"], s["std"], s["n"]


def reading(pretraining: dict[str, dict], summaries: dict[tuple[str, str], dict]) -> str:
    """One honest paragraph about what the table shows, written from the numbers (not from hopes)."""
    from bertwwm.tasks.registry import get_task

    parts = []
    wwm = pretraining.get("wwm")
    if wwm:
        learned = wwm["heldout_mlm_loss"] < wwm["unigram_loss"] - 0.05
        parts.append(f"Pretraining: the WWM model predicts {wwm['heldout_mlm_acc']:.1%} of held-out masked tokens "
                     f"(loss {wwm['heldout_mlm_loss']:.2f}; predicting from frequency alone gives "
                     f"{wwm['unigram_acc']:.1%} and {wwm['unigram_loss']:.2f}), so it "
                     + ("has learned to use context." if learned else "is still on the unigram plateau."))
    for task in TASKS:
        title = get_task(task).title
        rows = {name: _mean_sd(summaries[(task, name)]) for name in (*POLICIES, CONTROL) if (task, name) in summaries}
        if "wwm" not in rows or CONTROL not in rows:
            continue
        (m_w, sd_w, n), (m_r, sd_r, _) = rows["wwm"], rows[CONTROL]
        gap, noise = m_w - m_r, max(sd_w, sd_r, 1e-9)
        verdict = ("clearly helps" if gap > 2 * noise else "clearly hurts" if gap < -2 * noise
                   else "makes no difference larger than two seed standard deviations")
        line = (f"{title}: pretrained WWM {m_w:.1f} vs random init {m_r:.1f} (dev, mean of {n} seeds; seed sd "
                f"{sd_w:.1f} / {sd_r:.1f}): pretraining {verdict} ({gap:+.1f}).")
        if "char" in rows:
            m_c, sd_c, _ = rows["char"]
            diff = m_w - m_c
            line += (f" WWM vs char masking: {m_w:.1f} vs {m_c:.1f} ({diff:+.1f}); "
                     + ("a difference larger than the seed spread." if abs(diff) > 2 * max(sd_w, sd_c, 1e-9)
                        else "within the seed spread, so this run cannot rank the two policies."))
        parts.append(line)
    parts.append("The seeds vary fine-tuning only; each policy has one pretraining run, so the pretraining "
                 "seed's own variance is not in these numbers (benchmarks/ablation.py measures it). Models this "
                 "small and this briefly trained are far from the report's BERT-base numbers.")
    return " ".join(parts)


def step_report(run: Demo, pretrain_runs: dict[str, Path], finetune_runs: dict[tuple[str, str], Path]) -> dict:
    from bertwwm.pretrain.plot import plot_run
    from bertwwm.report import load_run, plot_runs, render_tables, summarize

    t0 = time.perf_counter()
    curves = [plot_run(folder) for folder in pretrain_runs.values()]  # RUN/curves.png, one per model
    loss_png = plot_pretraining(pretrain_runs, run.out / "pretrain-loss.png")
    pretraining = {LABELS[p]: pretraining_summary(folder) for p, folder in pretrain_runs.items()}
    summaries = {key: summarize(load_run(folder)) for key, folder in finetune_runs.items()}
    rows = [(LABELS[name], summaries[(task, name)]) for (task, name) in finetune_runs]
    table = render_tables(rows)
    text = reading({p: pretraining[LABELS[p]] for p in pretrain_runs}, summaries)
    scores_png = run.out / "finetune-scores.png"
    plot_runs(rows, scores_png)
    atomic_write_text(run.out / "results.md", _results_markdown(run, table, text))
    atomic_write_json(run.out / "results.json",
                      [{"label": label, **s, **({"control": True} if name == CONTROL else {})}
                       for (label, s), (_, name) in zip(rows, finetune_runs)])
    run.record("report", False, time.perf_counter() - t0)
    print(table, end="")
    print("\n" + text)
    print(f"\n  PNGs: {loss_png.name} (pretraining curves against the unigram reference), {scores_png.name} "
          "(per-seed scores), " + ", ".join(str(p.relative_to(run.out)) for p in curves))
    return {"table": table, "reading": text, "pretraining": pretraining}


def _results_markdown(run: Demo, table: str, text: str) -> str:
    b = run.budget
    side = ", side by side on a core each" if run.pretrain_parallel else ", one after the other"
    pretraining = (f"{run.pretrain_seconds():.0f} s of wall time each{side}" if b.pretrain_max_steps is None
                   else f"{b.pretrain_max_steps} steps each")
    return (f"# bertwwm demo: whole word masking vs character masking vs no pretraining ({b.name} budget)\n\n"
            f"Two tiny BERT models (2 layers, hidden 128) pretrained from the same random weights with the "
            f"`{RECIPE}` recipe ({pretraining}, seed {run.seed}) on the same instances of the shipped corpus "
            f"sample, one with whole word masking and one with character masking; and those random weights "
            f"without pretraining (the control). Each is fine-tuned with {b.seeds} seed(s) per task on the shipped "
            f"slices (ChnSentiCorp: {b.chnsenticorp[0] or 'all'} train / {b.chnsenticorp[1] or 'all'} dev "
            f"examples, CMRC 2018: {b.cmrc2018[0] or 'all'} train / {b.cmrc2018[1] or 'all'} dev questions), with "
            f"the learning rate (and, but for CMRC 2018's {b.cmrc2018_epochs:g}, the epochs) bertwwm picks by model size. Cells read \"max (mean)\" over seeds, as "
            f"in the report, then the standard deviation.\n\n{table}\n{text}\n\n"
            f"![pretraining curves](pretrain-loss.png)\n\n![per-seed scores](finetune-scores.png)\n")


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
    # the new task head; expected here, and 18 such tables would bury the demo's own progress.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    if not progress:  # transformers' "Loading weights" bars too
        from bertwwm.finetune import quiet_progress_bars

        quiet_progress_bars()
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
    run.header(2, "prepare the pretraining data once (masks are drawn per batch, by each model's policy)")
    data = step_prepare(run)
    run.header(3, "pretrain two tiny models with equal budgets (masking is the only difference), and the control")
    models = step_pretrain_all(run, data)
    models[CONTROL] = step_control(run)
    run.header(4, f"fine-tune each model on ChnSentiCorp and CMRC 2018, {budget.seeds} seed(s) each")
    finetuned = {(task, name): step_finetune(run, task, name, models[name])
                 for task in TASKS for name in (*POLICIES, CONTROL)}
    run.header(5, "report: max (mean) over seeds, pretraining curves, per-seed scores")
    report = step_report(run, {p: models[p].parent for p in POLICIES}, finetuned)

    total = time.perf_counter() - run.started
    state.update(out=str(out.resolve()), steps=run.steps, seconds=round(total, 1), table=report["table"],
                 reading=report["reading"], pretraining=report["pretraining"],
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
