"""The masking ablation: whole-word vs character vs word-n-gram masking at equal compute (runs for hours; not CI).

One corpus is prepared once with dynamic masking (token ids + word starts, no masks), so every model sees
exactly the same instances in the same order; the pretraining collator then draws wwm, char or ngram masks.
For each model size and policy: the same steps, batch, learning rate and seed. Each pretrained model is
fine-tuned on CMRC 2018 and ChnSentiCorp with N seeds and scored on dev with the official metrics; the
report-style "max (mean)" table and a plot are written under --docs together with the exact command line.

Every step is resumable (prepare, pretrain, finetune keep finished work), so rerunning the same command
continues where a killed run stopped. The report's expectation is wwm >= char on reading comprehension; the
table says what was measured, whichever way it goes.

    python benchmarks/ablation.py                                   # the full ablation (hours on a CPU)
    python benchmarks/ablation.py --steps 4 --seeds 1 --models tiny --max-train-examples 16 \
        --max-eval-examples 16 --corpus-chars 50000 --out /tmp/abl --docs /tmp/abl/docs   # smoke run

Cost with the defaults (tiny and small, 3 policies, 5,000 steps x 64 sequences, full CMRC 2018 and
ChnSentiCorp training sets, 5 seeds): pretraining is hours on a 2-core CPU (tiny ~0.6 s per step of 64
sequences, small several times that), and fine-tuning on the full training sets is the larger part -- days
on such a CPU, a few hours on one GPU (pretrain and finetune use CUDA when it is available). On a CPU,
`--max-train-examples` bounds the fine-tuning cost; dev sets are always scored in full unless
`--max-eval-examples` is given.

The final line is JSON: {"cases": [{"model", "policy", "task", "metric", "max", "mean", "std", "n"}, ...]}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
POLICIES = ("wwm", "char", "ngram")
TASKS = ("cmrc2018", "chnsenticorp")
# Peak pretraining learning rates per size (the tiny-cpu recipe's 1e-3 for tiny; smaller for the larger model).
PRETRAIN_LR = {"tiny": 1e-3, "small": 5e-4, "base": 1e-4}
# Fine-tuning learning rates: models this small need larger steps than the report's 2e-5..3e-5 for BERT-base.
FINETUNE_LR = {"tiny": {"cmrc2018": 3e-4, "chnsenticorp": 2e-4}, "small": {"cmrc2018": 1e-4, "chnsenticorp": 1e-4},
               "base": {"cmrc2018": 3e-5, "chnsenticorp": 2e-5}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", default=[str(SHARED / "corpus" / "prc-laws.txt.gz"),
                                                   str(SHARED / "corpus" / "clue-small-sample.txt")],
                   help="pretraining text (default: the shared PRC-laws corpus and CLUE sample, 20M characters)")
    p.add_argument("--corpus-chars", type=int, help="use only the first N characters of the (single) corpus file")
    p.add_argument("--task-data-dir", default=str(SHARED / "tasks"), help="folder with cmrc2018/ and chnsenticorp/")
    p.add_argument("--out", default="runs/ablation", help="work folder (rerun the same command to resume)")
    p.add_argument("--docs", default=str(REPO / "docs" / "ablation"), help="where results.md and the PNG go")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated masking policies")
    p.add_argument("--models", default="tiny,small", help="comma-separated model presets")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--steps", type=int, default=5000, help="pretraining steps per model (equal for every policy)")
    p.add_argument("--batch-size", type=int, default=64, help="pretraining sequences per step")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=12345, help="data and pretraining seed (the same for every model)")
    p.add_argument("--seeds", type=int, default=5, help="fine-tuning seeds per model and task (>= 5 for the ablation)")
    p.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs")
    p.add_argument("--max-train-examples", type=int, help="fine-tune on a stratified sample of N training examples")
    p.add_argument("--max-eval-examples", type=int, help="score a stratified sample of N dev examples")
    p.add_argument("--cmrc-max-seq-length", type=int, default=384)
    p.add_argument("--workers", type=int, default=2, help="prepare worker processes")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for pretraining")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.policies, args.models, args.tasks = (tuple(x.strip() for x in v.split(",") if x.strip())
                                              for v in (args.policies, args.models, args.tasks))
    unknown = [x for x in args.policies if x not in POLICIES] + [x for x in args.tasks if x not in TASKS] + \
              [x for x in args.models if x not in PRETRAIN_LR]
    if unknown:
        p.error(f"unknown value(s): {', '.join(unknown)}")
    return args


def cut_corpus(files: list[str], chars: int, target: Path) -> Path:
    """The first `chars` characters of one text file, cut at a document boundary (a blank line)."""
    if target.is_file():
        return target
    if len(files) != 1:
        raise SystemExit("--corpus-chars needs exactly one --corpus file")
    opener = gzip.open if files[0].endswith(".gz") else open
    kept, n = [], 0
    with opener(files[0], "rt", encoding="utf-8") as f:
        for line in f:
            kept.append(line)
            n += len(line)
            if n >= chars and not line.strip():
                break
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    tmp.replace(target)
    return target


def prepare_data(args, out: Path) -> Path:
    from bertwwm.errors import UserError
    from bertwwm.prepare import prepare
    from bertwwm.storage import read_manifest

    folder = out / "data"
    try:
        read_manifest(folder)
        print(f"[ablation] data: reused {folder}", flush=True)
        return folder
    except UserError:
        pass
    files = args.corpus if args.corpus_chars is None else \
        [str(cut_corpus(args.corpus, args.corpus_chars, out / f"corpus-{args.corpus_chars}.txt"))]
    # Dynamic: ids and word starts only; each policy's collator draws its own masks from the same instances.
    prepare(files, folder, masking="wwm", max_seq_length=args.max_seq_length, nsp=True, dynamic=True,
            workers=args.workers, seed=args.seed, progress=not args.no_progress)
    return folder


def pretrain_model(args, data: Path, out: Path, model: str, policy: str) -> Path:
    import torch

    from bertwwm.pretrain import config_from_recipe, load_recipe, pretrain

    folder = out / f"pretrain-{model}-{policy}"
    if (folder / "final" / "config.json").is_file():
        print(f"[ablation] pretrain {model} {policy}: reused", flush=True)
        return folder / "final"
    recipe, where = load_recipe("tiny-cpu")
    cfg = config_from_recipe(recipe, where, out=str(folder), data=str(data), preset=model, policy=policy,
                             data_masking="dynamic", lr=PRETRAIN_LR[model], seed=args.seed, resume=True,
                             bf16=args.bf16, threads=args.threads or torch.get_num_threads(),
                             save_every=max(1, min(500, args.steps // 4)), eval_every=max(1, args.steps // 10),
                             log_every=max(1, min(20, args.steps // 10)), progress=not args.no_progress)
    for phase in cfg.phases:
        phase.steps, phase.batch_size, phase.max_seq_length = args.steps, args.batch_size, args.max_seq_length
    print(f"[ablation] pretrain {model} {policy}: {args.steps} steps x {args.batch_size} -> {folder}", flush=True)
    return pretrain(cfg)


def finetune_model(args, out: Path, final: Path, model: str, policy: str, task: str) -> Path:
    from bertwwm.finetune import finetune

    folder = out / f"finetune-{task}-{model}-{policy}"
    print(f"[ablation] finetune {task} on {model} {policy}: {args.seeds} seeds -> {folder}", flush=True)
    finetune(task, str(final.resolve()), folder, seeds=args.seeds, data_dir=args.task_data_dir, save_model=False,
             progress=not args.no_progress, epochs=args.epochs, learning_rate=FINETUNE_LR[model][task],
             max_seq_length=args.cmrc_max_seq_length if task == "cmrc2018" else 256,
             batch_size=32, max_train_examples=args.max_train_examples, max_eval_examples=args.max_eval_examples)
    return folder


def plot(rows: list[tuple[str, str, str, dict]], curves: dict[str, Path], png: Path) -> None:
    """Left: each task's main dev metric per model and policy (every seed, mean and max). Right: MLM loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.plot import read_metrics
    from bertwwm.report import plot_seed_scores
    from bertwwm.tasks.registry import get_task

    tasks = sorted({r[2] for r in rows}, key=TASKS.index)
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(5 * (len(tasks) + 1), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = "/".join(get_task(task).main_metric)
        ticks, labels = [], []
        for x, (model, policy, _, summary) in enumerate(r for r in rows if r[2] == task):
            plot_seed_scores(ax, x, summary["dev"][metric], f"C{POLICIES.index(policy)}")
            ticks.append(x)
            labels.append(f"{model}\n{policy}")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_title(f"{get_task(task).title} dev {metric} per seed (line mean, ^ max)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[0][-1]
    for k, (name, folder) in enumerate(curves.items()):
        series = read_metrics(folder).get("eval", {}).get("mlm_loss")
        if series:
            ax.plot(*series, marker="o", markersize=3, label=name, color=f"C{k}")
    ax.set_title("held-out MLM loss (each policy on its own masks)", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)


def write_results(args, rows, curves, docs: Path, seconds: float) -> list[dict]:
    from bertwwm.fileio import atomic_write_text
    from bertwwm.report import render_tables

    docs.mkdir(parents=True, exist_ok=True)
    plot(rows, curves, docs / "ablation.png")
    table = render_tables([(f"{model} {policy}", summary) for model, policy, _, summary in rows])
    command = "python benchmarks/ablation.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    import torch

    text = (
        "# Masking ablation: wwm vs char vs ngram at equal compute\n\n"
        f"Produced by:\n\n```\n{command}\n```\n\n"
        f"Models {', '.join(args.models)}; policies {', '.join(args.policies)}; {args.steps} pretraining steps x "
        f"{args.batch_size} sequences of length {args.max_seq_length}, seed {args.seed}, the same instances in "
        f"the same order for every policy (dynamic masking over one prepared folder). Fine-tuning: "
        f"{args.seeds} seeds, {args.epochs:g} epoch(s), dev scores with the official metrics; cells read "
        f"\"max (mean)\" then the standard deviation over seeds.\n\n"
        f"Corpus: {', '.join(Path(c).name for c in args.corpus)}"
        f"{f' (first {args.corpus_chars:,} characters)' if args.corpus_chars else ''}. "
        f"Fine-tuning data: {args.task_data_dir}"
        f"{f', a stratified sample of {args.max_train_examples} train' if args.max_train_examples else ''}"
        f"{f', a stratified sample of {args.max_eval_examples} dev examples' if args.max_eval_examples else ''}.\n\n"
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}; "
        f"wall time of this invocation {seconds / 3600:.2f} h (finished steps are reused).\n\n"
        f"{table}\n![ablation](ablation.png)\n")
    atomic_write_text(docs / "results.md", text)
    cases = []
    for model, policy, task, summary in rows:
        for metric, s in summary["dev"].items():
            cases.append({"model": model, "policy": policy, "task": task, "metric": metric,
                          **{k: s[k] for k in ("max", "mean", "std", "n")}})
    return cases


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bertwwm.errors import UserError
    from bertwwm.finetune import read_results
    from bertwwm.report import summarize

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the expected "new task head" load report, once per seed, buries progress
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        data = prepare_data(args, out)
        finals = {(m, p): pretrain_model(args, data, out, m, p) for m in args.models for p in args.policies}
        rows = []
        for task in args.tasks:
            for (model, policy), final in finals.items():
                folder = finetune_model(args, out, final, model, policy, task)
                rows.append((model, policy, task, summarize(read_results(folder))))
    except UserError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    curves = {f"{m} {p}": f.parent for (m, p), f in finals.items()}
    cases = write_results(args, rows, curves, Path(args.docs), time.perf_counter() - started)
    print((Path(args.docs) / "results.md").read_text(encoding="utf-8"))
    print(json.dumps({"cases": cases, "means": {f"{c['model']} {c['policy']} {c['task']} {c['metric']}":
                                                round(c["mean"], 2) for c in cases}}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
