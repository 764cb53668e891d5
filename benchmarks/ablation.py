"""The masking ablation: whole-word vs character vs word-n-gram masking at equal pretraining time (not CI).

How it is run. The corpus is split by document: every 50th document of each corpus file (the 8th, the 58th,
...) is held out. The rest is prepared ONCE with dynamic masking (token ids and word starts, no masks) at the
recipe's length, so every policy trains on exactly the same instances -- in the same order for the same
pretraining seed -- and only the collator's masks differ; the held-out documents are prepared alike into a
folder of their own, which every run is scored on (`PretrainConfig.heldout`). Each (model, policy,
pretraining seed) is its own `bertwwm pretrain` run of the small-budget recipe `tiny-cpu-fast` (length 64,
40% masks, no NSP, batch 8 -> 16, lr 1e-3) for the same wall-time budget (`--time-budget`; `--steps N` for
exactly equal steps instead). The small model gets lr 5e-4 and 4x the budget (about the cost ratio of its
steps, so it sees about as many tokens). Per pretraining seed a random-init control -- `bertwwm init` with
that seed, i.e. the pretraining runs' own starting weights -- is fine-tuned exactly like the pretrained
models: ChnSentiCorp and CMRC 2018, `--seeds` fine-tuning seeds, finetune's learning rate and epochs for the
model's size (none is passed unless `--finetune-lr` / `--epochs` is given), batch 16, length 128 / 256, on
stratified subsets; dev scored with the official metrics.

What it writes under --docs: results.md (with the exact command line) and ablation.png.
- Fine-tuning tables, one per task: a row per model and policy, and the random-init control. Each
  pretraining seed's score is its mean over fine-tuning seeds; the cells give the report's "max (mean)" over
  all (pretraining seed, fine-tuning seed) runs, the sd over pretraining seeds of those per-seed means (the
  pretraining-seed variance), and the pooled sd over fine-tuning seeds within a pretraining seed.
- A pretraining table (mean ± sd over seeds): steps reached in the budget; held-out MLM loss and accuracy on
  the run's own masks (15%, drawn by its policy, as `pretrain` logs them) and the unigram loss of the same
  masked tokens (a model at the unigram loss predicts from token frequency alone); and held-out accuracy on
  common 15% whole-word and character masks, the same positions for every model, so those two columns
  compare the policies directly.

Every step is resumable (the corpus split, prepare, each pretraining run, each fine-tuning seed keep
finished work): rerun the same command to continue. More policies, models, tasks, pretraining or
fine-tuning seeds may be added on a rerun; settings that change results (budget, corpus, subsets, ...) may
not (OUT/ablation.json records them). The work goes seed by seed: all policies of pretraining seed 1 are
pretrained and fine-tuned before seed 2 starts, so a stopped run has complete seeds.

    python benchmarks/ablation.py                      # the default ablation (about 1.5 h on a 2-core CPU)
    python benchmarks/ablation.py --time-budget 20s --pretrain-seeds 2 --seeds 1 --models tiny \
        --max-train-examples 32 --max-eval-examples 32 --corpus-chars 200000 \
        --out /tmp/abl --docs /tmp/abl/docs            # smoke run (a few minutes on an idle CPU)

Cost of the defaults (tiny; policies wwm, char, ngram; 3 pretraining seeds; 3 fine-tuning seeds; 4-minute
runs), with the rates `bertwwm demo` measured on this project's 2-core CPU (pretraining 0.12-0.14 s per step
of 16 x 64 tokens; ChnSentiCorp training ~230 examples/s at length 128, scoring ~900/s; CMRC 2018 training
~21 questions/s at length 256 (~3 windows each), scoring ~100/s):
- data, once: reading and splitting the 20.4M-character corpus, preparing both parts at length 64 with 2
  workers: ~2 min;
- pretraining: 3 policies x 3 seeds x (4 min + ~15 s to build, save and score the model) = ~38 min
  (~1,800-2,000 steps per run);
- fine-tuning: (3 policies + random init) x 3 pretraining seeds = 12 models, x 3 fine-tuning seeds = 36 runs
  per task. ChnSentiCorp: 1,000 examples x 3 epochs (~13 s) + 1,200 dev and 1,200 test scored (~3 s) +
  loading (~2 s) = ~18 s a run, 11 min. CMRC 2018: 300 questions x 3 epochs (~43 s) + 500 dev questions
  (~5 s) + loading (~2 s) = ~50 s a run, 30 min;
- total: 2 + 38 + 11 + 30 = ~81 min on an idle machine; the rest of the 2 hours is the margin for a
  slower or busier one (all of this is CPU-bound: another job on the same cores slows it in proportion).
`--time-budget` is the knob: each extra minute per run adds 9 minutes. `--models tiny,small` adds the small
model at 4x the budget and several times the fine-tuning cost (hours more). On a GPU everything is faster
(pretrain and finetune use CUDA when available), and a time budget then buys many more steps: compare runs
made on one kind of machine only.

The final line is JSON: {"cases": [{"model", "policy", "task", "metric", "max", "mean", "std", "n",
"pretrain_seeds", "finetune_seeds", "seed_means", "sd_pretrain_seeds", "sd_finetune_seeds"}, ...],
"pretraining": [{"model", "policy", "seed", "steps", "heldout": {...}, "common": {...}}, ...], "means": {...}}.
"max", "mean", "std" and "n" are over all n = pretraining x fine-tuning seeds dev scores; "seed_means" are
each pretraining seed's mean over fine-tuning seeds, "sd_pretrain_seeds" their sd; the random-init control
has policy "random-init".
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RECIPE = "tiny-cpu-fast"
POLICIES = ("wwm", "char", "ngram")
RANDOM_INIT = "random-init"  # the policy name of the no-pretraining control in the JSON
TASKS = ("chnsenticorp", "cmrc2018")
# Peak pretraining learning rate per size: the recipe's own (1e-3, tuned for tiny) or smaller for larger models.
PRETRAIN_LR = {"tiny": None, "small": 5e-4, "base": 1e-4}
# Budget per size relative to tiny: about the compute of one step (encoder plus the 21,128-way MLM output
# of the masked tokens), so every size sees about the same number of training tokens.
BUDGET_SCALE = {"tiny": 1, "small": 4, "base": 60}
HELDOUT_EVERY, HELDOUT_OFFSET = 50, 7  # every 50th document of each file, starting with the 8th, is held out
COMMON_MASKS = ("wwm", "char")  # held-out masks shared by every model, at BERT's 15%
COMMON_MASK_PROB = 0.15
# Fine-tuning per task, as `bertwwm demo` does on a CPU (the size defaults' learning rate was measured at
# batch 16): (training examples, dev/test examples; None = all), max sequence length. The training subsets
# are small on purpose: the fewer labels, the more a pretrained start can show.
FINETUNE = {"chnsenticorp": ((1000, None), 128), "cmrc2018": ((300, 500), 256)}
FINETUNE_BATCH_SIZE = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from bertwwm.core.errors import UserError
    from bertwwm.pretrain import parse_duration

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", default=[str(SHARED / "corpus" / "prc-laws.txt.gz"),
                                                   str(SHARED / "corpus" / "clue-small-sample.txt")],
                   help="pretraining text, documents separated by blank lines (default: the shared PRC-laws "
                        "corpus and CLUE sample, 20.4M characters)")
    p.add_argument("--corpus-chars", type=int,
                   help="use about N characters in all: the first N/k of each of the k corpus files")
    p.add_argument("--task-data-dir", default=str(SHARED / "tasks"), help="folder with cmrc2018/ and chnsenticorp/")
    p.add_argument("--out", default="runs/ablation", help="work folder (rerun the same command to resume)")
    p.add_argument("--docs", default=str(REPO / "docs" / "ablation"), help="where results.md and the PNG go")
    p.add_argument("--policies", default=",".join(POLICIES), help="comma-separated masking policies")
    p.add_argument("--models", default="tiny", help="comma-separated model presets (tiny, small, base)")
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks")
    p.add_argument("--time-budget", default="4m",
                   help="wall time of each tiny pretraining run (90s, 4m, 1h; larger models get more, see "
                        "BUDGET_SCALE); default 4m")
    p.add_argument("--steps", type=int, help="pretrain exactly N steps per run instead of a time budget")
    p.add_argument("--pretrain-seeds", type=int, default=3, help="pretraining seeds per policy (default 3)")
    p.add_argument("--seed", type=int, default=12345,
                   help="the data seed and the first pretraining seed (the others follow: 12346, 12347, ...)")
    p.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per model and task (default 3)")
    p.add_argument("--epochs", type=float, help="fine-tuning epochs (default: finetune's for the model's size)")
    p.add_argument("--finetune-lr", type=float,
                   help="fine-tuning learning rate (default: finetune's for the model's size)")
    p.add_argument("--max-train-examples", type=int,
                   help="fine-tune every task on a stratified sample of N training examples (0: all; default: "
                        "ChnSentiCorp 1,000, CMRC 2018 300)")
    p.add_argument("--max-eval-examples", type=int,
                   help="score a stratified sample of N dev (and test) examples of every task (0: all; default: "
                        "ChnSentiCorp all 1,200 + 1,200, CMRC 2018 500)")
    p.add_argument("--cmrc-max-seq-length", type=int, default=FINETUNE["cmrc2018"][1])
    p.add_argument("--chnsenticorp-max-seq-length", type=int, default=FINETUNE["chnsenticorp"][1])
    p.add_argument("--workers", type=int, default=2, help="prepare worker processes")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for pretraining")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the command line in results.md
    args.policies, args.models, args.tasks = (tuple(x.strip() for x in v.split(",") if x.strip())
                                              for v in (args.policies, args.models, args.tasks))
    unknown = [x for x in args.policies if x not in POLICIES] + [x for x in args.tasks if x not in TASKS] + \
              [x for x in args.models if x not in PRETRAIN_LR]
    if unknown:
        p.error(f"unknown value(s): {', '.join(unknown)}")
    if not (args.policies and args.models and args.tasks):
        p.error("--policies, --models and --tasks need at least one value each")
    if args.pretrain_seeds < 1 or args.seeds < 1:
        p.error("--pretrain-seeds and --seeds must be at least 1")
    if args.steps is not None and args.steps < 1:
        p.error("--steps must be positive")
    try:
        args.budget_seconds = None if args.steps else parse_duration(args.time_budget)
    except UserError as e:
        p.error(str(e))
    if args.budget_seconds is not None and args.budget_seconds <= 0:
        p.error("--time-budget must be positive")
    args.subsets = {}  # task -> (training examples, evaluation examples), None = all
    for task in args.tasks:
        train, evaluate = FINETUNE[task][0]
        train = train if args.max_train_examples is None else args.max_train_examples or None
        evaluate = evaluate if args.max_eval_examples is None else args.max_eval_examples or None
        args.subsets[task] = (train, evaluate)
    args.max_lengths = {"chnsenticorp": args.chnsenticorp_max_seq_length, "cmrc2018": args.cmrc_max_seq_length}
    args.pretrain_seed_list = [args.seed + k for k in range(args.pretrain_seeds)]
    return args


# ------------------------------------------------------------------------------------------------ data

def read_documents(path: str, max_chars: int | None) -> list[str]:
    """The documents of a text file (separated by blank lines), up to about `max_chars` characters."""
    from bertwwm.core.errors import UserError

    opener = gzip.open if str(path).endswith(".gz") else open
    docs, lines, total = [], [], 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    lines.append(line if line.endswith("\n") else line + "\n")
                    total += len(line)
                    continue
                if lines:
                    docs.append("".join(lines))
                    lines = []
                    if max_chars is not None and total >= max_chars:
                        return docs
    except FileNotFoundError:
        raise UserError("corpus file not found", path) from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise UserError(f"cannot read the corpus file ({e})", path) from None
    if lines:
        docs.append("".join(lines))
    return docs


def split_corpus(args, out: Path) -> tuple[Path, Path]:
    """OUT/corpus/train.txt and heldout.txt: every HELDOUT_EVERY-th document of each file is held out."""
    from bertwwm.core.errors import UserError
    from bertwwm.core.fileio import atomic_write_text

    folder = out / "corpus"
    train, heldout = folder / "train.txt", folder / "heldout.txt"
    if train.is_file() and heldout.is_file():
        return train, heldout
    share = None if args.corpus_chars is None else max(1, args.corpus_chars // len(args.corpus))
    kept, held = [], []
    for path in args.corpus:
        for i, doc in enumerate(read_documents(path, share)):
            (held if i % HELDOUT_EVERY == HELDOUT_OFFSET else kept).append(doc)
    if not held or not kept:
        raise UserError(f"too few documents to hold out every {HELDOUT_EVERY}th (found {len(kept) + len(held)}); "
                        "give a larger corpus (documents are separated by blank lines)", args.corpus[0])
    atomic_write_text(heldout, "\n".join(held))  # held-out first: train.txt existing means both exist
    atomic_write_text(train, "\n".join(kept))
    print(f"[ablation] corpus: {len(kept):,} documents ({sum(map(len, kept)):,} chars) to train on, "
          f"{len(held):,} ({sum(map(len, held)):,} chars) held out -> {folder}", flush=True)
    return train, heldout


def prepare_folder(text: Path, folder: Path, args, max_seq_length: int) -> Path:
    from bertwwm.core.errors import UserError
    from bertwwm.data.prepare import prepare
    from bertwwm.data.storage import read_manifest

    try:
        read_manifest(folder)
        print(f"[ablation] data: reused {folder}", flush=True)
        return folder
    except UserError:
        pass
    # Dynamic: ids and word starts only; each policy's collator draws its own masks from the same instances.
    prepare([str(text)], folder, masking="wwm", max_seq_length=max_seq_length, nsp=False, dynamic=True,
            workers=args.workers, seed=args.seed, progress=not args.no_progress)
    return folder


def check_settings(args, out: Path) -> None:
    """A rerun continues the same ablation: refuse settings that would mix results of different setups."""
    from bertwwm.core.errors import UserError
    from bertwwm.core.fileio import atomic_write_json

    now = {"recipe": RECIPE, "corpus": [str(Path(c).resolve()) for c in args.corpus],
           "corpus_chars": args.corpus_chars, "heldout_every": HELDOUT_EVERY, "seed": args.seed,
           "time_budget_s": args.budget_seconds, "steps": args.steps, "epochs": args.epochs,
           "finetune_lr": args.finetune_lr, "bf16": args.bf16,
           **{f"{task}_examples": list(args.subsets[task]) for task in args.tasks},
           **{f"{task}_max_seq_length": args.max_lengths[task] for task in args.tasks},
           "task_data_dir": str(Path(args.task_data_dir).resolve())}
    path = out / "ablation.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        differing = [k for k in now if k in before and before[k] != now[k]]  # a task added later is new
        if differing:
            raise UserError(f"{out} holds an ablation with other settings "
                            f"({', '.join(f'{k}: {before.get(k)!r} now {now[k]!r}' for k in differing)}); "
                            "rerun with the same options to continue it, or choose another --out", path)
        now = {**before, **now}
    atomic_write_json(path, now)


# ----------------------------------------------------------------------------------------------- models

def pretrain_model(args, data: Path, heldout: Path, out: Path, model: str, policy: str, seed: int) -> Path:
    import torch

    from bertwwm.pretrain import config_from_recipe, load_recipe, pretrain, scale_steps

    folder = out / f"pretrain-{model}-{policy}-seed{seed}"
    recipe, where = load_recipe(RECIPE)
    budget = None if args.steps else args.budget_seconds * BUDGET_SCALE[model]
    cfg = config_from_recipe(recipe, where, out=str(folder), data=str(data), heldout=str(heldout), preset=model,
                             policy=policy, lr=PRETRAIN_LR[model], seed=seed, resume=True, bf16=args.bf16,
                             time_budget=budget, threads=args.threads or torch.get_num_threads(),
                             progress=not args.no_progress)
    if args.steps:
        scale_steps(cfg, args.steps)
        cfg.eval_every = max(1, min(cfg.eval_every, args.steps // 10))
        cfg.save_every = max(1, min(cfg.save_every, args.steps // 4))
    how = f"{args.steps} steps" if args.steps else f"{budget:g} s"
    print(f"[ablation] pretrain {model} {policy} seed {seed}: {how} -> {folder}", flush=True)
    return pretrain(cfg)  # a finished run with the same settings returns at once


def random_init_model(out: Path, model: str, seed: int) -> Path:
    from bertwwm.modeling.init_model import init_model

    folder = out / f"init-{model}-seed{seed}"
    if not (folder / "config.json").is_file():
        init_model(folder, preset=model, seed=seed)  # the pretraining runs' starting weights for this seed
    return folder


def finetune_model(args, out: Path, model_folder: Path, name: str, task: str) -> Path:
    from bertwwm.finetune import finetune

    folder = out / f"finetune-{task}-{name}"
    print(f"[ablation] finetune {task} on {name}: {args.seeds} seed(s) -> {folder}", flush=True)
    n_train, n_eval = args.subsets[task]
    finetune(task, str(model_folder.resolve()), folder, seeds=args.seeds, data_dir=args.task_data_dir,
             save_model=False, progress=not args.no_progress, epochs=args.epochs, learning_rate=args.finetune_lr,
             batch_size=FINETUNE_BATCH_SIZE, max_seq_length=args.max_lengths[task], max_train_examples=n_train,
             max_eval_examples=n_eval)
    return folder


def last_eval(run: Path) -> dict:
    """The run's last held-out record in metrics.jsonl (own masks), with the step it was taken at."""
    from bertwwm.pretrain.heldout import last_heldout

    record = last_heldout(run)
    return {k: record[k] for k in ("step", "mlm_loss", "mlm_acc", "unigram_loss", "unigram_acc") if k in record}


class CommonHeldout:
    """Held-out MLM scores on masks shared by every model (15% whole-word and character masks, drawn once)."""

    def __init__(self, data: Path, heldout: Path, phase: dict, mask_prob: float, instances: int):
        from bertwwm.pretrain import heldout as ho
        from bertwwm.modeling.model import VOCAB_SIZE
        from bertwwm.data.storage import PreparedDataset
        from bertwwm.text.tokens import VocabInfo

        items = ho.heldout_items(heldout, instances, phase["max_seq_length"])
        self.log_probs = ho.unigram_log_probs(PreparedDataset(data), [], VOCAB_SIZE)
        self.batches = {}
        micro = phase["batch_size"]  # as pretrain's own evaluation: so a wwm run's own masks are these wwm masks
        for policy in COMMON_MASKS:
            collator = ho.evaluation_collator(policy, COMMON_MASK_PROB,
                                              round(phase["max_predictions"] * COMMON_MASK_PROB / mask_prob), "token")
            collator.vocab = VocabInfo.from_vocab(None)
            self.batches[policy] = [collator(items[k:k + micro]) for k in range(0, len(items), micro)]

    def score(self, model_folder: Path) -> dict:
        """{policy: {mlm_loss, mlm_acc, unigram_loss, unigram_acc}}, cached beside the model."""
        from bertwwm.core.fileio import atomic_write_json

        cache = model_folder.parent / f"{model_folder.name}-common-heldout.json"
        if cache.is_file():
            return json.loads(cache.read_text(encoding="utf-8"))
        import torch

        from bertwwm.pretrain import heldout as ho
        from bertwwm.modeling.model import PretrainingModel, load_model

        net = PretrainingModel(load_model(model_folder, nsp=False))
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        net.to(device)
        scores = {}
        for policy, batches in self.batches.items():
            record = ho.evaluate(net, batches, device, self.log_probs)
            scores[policy] = {k: record[k] for k in ("mlm_loss", "mlm_acc", "unigram_loss", "unigram_acc")}
        atomic_write_json(cache, scores)
        return scores


# ------------------------------------------------------------------------------------------- summaries

def sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def combine(per_seed: dict[int, dict]) -> dict:
    """{metric: stats} over pretraining seeds from {pretraining seed: report.summarize(...)} (dev split)."""
    out: dict = {}
    metrics = [m for m in next(iter(per_seed.values())).get("dev", {})]
    for metric in metrics:
        groups = [s["dev"][metric]["values"] for s in per_seed.values() if metric in s.get("dev", {})]
        scores = [v for g in groups for v in g]
        means = [statistics.fmean(g) for g in groups]
        # pooled sd over fine-tuning seeds within a pretraining seed (0 with one fine-tuning seed)
        dof = sum(len(g) - 1 for g in groups)
        within = math.sqrt(sum(sum((v - statistics.fmean(g)) ** 2 for v in g) for g in groups) / dof) if dof else 0.0
        out[metric] = {"max": max(scores), "mean": statistics.fmean(scores), "std": sd(scores), "n": len(scores),
                       "pretrain_seeds": len(groups), "finetune_seeds": min(len(g) for g in groups),
                       "seed_means": means, "sd_pretrain_seeds": sd(means), "sd_finetune_seeds": within,
                       "values": scores}
    return out


def label(model: str, policy: str) -> str:
    return f"{model} (random init)" if policy == RANDOM_INIT else f"{model} {policy}"


def finetune_tables(rows: list[dict]) -> str:
    from bertwwm.tasks.registry import get_task

    parts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == task]
        metrics = list(task_rows[0]["stats"])
        header = ["Model", "Seeds (pretrain x finetune)"]
        for m in metrics:
            name = m.split("/")[-1].upper() if m != "accuracy" else "Acc"
            header += [f"Dev {name} max (mean)", "sd pretrain seeds", "sd finetune seeds"]
        lines = [f"### {get_task(task).title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in task_rows:
            first = r["stats"][metrics[0]]
            cells = [label(r["model"], r["policy"]), f"{first['pretrain_seeds']} x {first['finetune_seeds']}"]
            for m in metrics:
                s = r["stats"][m]
                cells += [f"{s['max']:.1f} ({s['mean']:.1f})", f"{s['sd_pretrain_seeds']:.2f}",
                          f"{s['sd_finetune_seeds']:.2f}" if s["finetune_seeds"] > 1 else "–"]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def mean_sd(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.fmean(values):.{digits}f} ± {sd(values):.{digits}f}" if len(values) > 1 else \
        f"{values[0]:.{digits}f}"


def pretraining_table(runs: list[dict]) -> str:
    header = ["Model", "Seeds", "Steps", "MLM loss (own masks)", "MLM acc (own masks)", "Unigram loss (own masks)",
              *(f"Acc on common {p} masks" for p in COMMON_MASKS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in dict.fromkeys((r["model"], r["policy"]) for r in runs):
        group = [r for r in runs if (r["model"], r["policy"]) == key]
        own = [r["heldout"] for r in group]
        cells = [label(*key), str(len(group)), mean_sd([r["steps"] for r in group], 0),
                 mean_sd([h.get("mlm_loss") for h in own]), mean_sd([h.get("mlm_acc") for h in own]),
                 mean_sd([h.get("unigram_loss") for h in own]),
                 *(mean_sd([r["common"][p]["mlm_acc"] for r in group]) for p in COMMON_MASKS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], runs: list[dict], png: Path) -> None:
    """Per task: each pretraining seed's mean dev score (dots), all fine-tuning runs (small grey), the mean
    (line) and max (^). Right: held-out MLM loss over steps (own masks), and each policy's unigram line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertwwm.core.fileio import atomic_path
    from bertwwm.pretrain.plot import read_metrics
    from bertwwm.tasks.registry import get_task

    colors = {p: f"C{k}" for k, p in enumerate(POLICIES + (RANDOM_INIT,))}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(5 * (len(tasks) + 1), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        metric = "/".join(get_task(task).main_metric)
        ticks, labels = [], []
        for x, r in enumerate(r for r in rows if r["task"] == task):
            s = r["stats"][metric]
            ax.scatter([x] * len(s["values"]), s["values"], s=8, color="0.6", alpha=0.6)
            ax.scatter([x] * len(s["seed_means"]), s["seed_means"], s=28, color=colors[r["policy"]], alpha=0.9)
            ax.hlines([s["mean"]], x - 0.3, x + 0.3, color="k", linewidth=1)
            ax.scatter([x], [s["max"]], marker="^", color="k", s=30)
            ticks.append(x)
            labels.append(label(r["model"], r["policy"]).replace(" ", "\n", 1))
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_title(f"{get_task(task).title} dev {metric}: dot = one pretraining seed's mean\n"
                     "(grey: every fine-tuning run; line mean, ^ max)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[0][-1]
    named = set()
    for r in runs:
        if r["policy"] == RANDOM_INIT:
            continue
        series = read_metrics(r["folder"]).get("eval", {})
        name = label(r["model"], r["policy"])
        if series.get("mlm_loss"):
            ax.plot(*series["mlm_loss"], marker="o", markersize=2, color=colors[r["policy"]], alpha=0.8,
                    label=None if name in named else name, linestyle="-" if r["model"] == "tiny" else "--")
        if name not in named and r["heldout"].get("unigram_loss") is not None:  # one policy's masks: one line
            ax.axhline(r["heldout"]["unigram_loss"], color=colors[r["policy"]], alpha=0.5, linestyle=":")
        named.add(name)
    ax.set_title("held-out MLM loss (each run on its own policy's 15% masks;\n"
                 "dotted: unigram loss of the same masked tokens)", fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def subset_text(task: str, n_train: int | None, n_eval: int | None, length: int) -> str:
    from bertwwm.tasks.registry import get_task

    splits = "dev and test" if task == "chnsenticorp" else "dev"
    train = f"a stratified sample of {n_train:,} training examples" if n_train else "all training examples"
    scored = f"a stratified sample of {n_eval:,} {splits} examples" if n_eval else f"all {splits} examples"
    return f"{get_task(task).title}: {train}, {scored}, length {length}"


def steps_note(args, runs: list[dict]) -> str:
    """A time budget is equal compute only on a machine nobody else uses: say so when the steps show it."""
    steps = [r["steps"] for r in runs if r["policy"] != RANDOM_INIT and r["steps"]]
    if args.steps or not steps or max(steps) <= 1.2 * min(steps):
        return ""
    return (f"**Unequal compute:** the runs reached between {min(steps):,} and {max(steps):,} steps in the same "
            "budget (other work shared the machine), so the policies did not get the same training; compare "
            "the steps column below, or rerun in a new --out with `--steps N` for exactly equal steps.\n\n")


def write_results(args, rows: list[dict], runs: list[dict], docs: Path, seconds: float) -> None:
    import torch

    from bertwwm.core.fileio import atomic_write_text

    docs.mkdir(parents=True, exist_ok=True)
    plot(rows, runs, docs / "ablation.png")
    command = "python benchmarks/ablation.py " + " ".join(shlex.quote(a) for a in args.argv)
    budget = (f"{args.steps} steps per run" if args.steps else
              f"a wall-time budget of {args.budget_seconds:g} s per tiny run"
              f"{' (x' + str(BUDGET_SCALE['small']) + ' for small)' if 'small' in args.models else ''}")
    subsets = "; ".join(subset_text(t, n, m, args.max_lengths[t]) for t, (n, m) in args.subsets.items())
    text = (
        "# Masking ablation: wwm vs char vs ngram at equal pretraining time\n\n"
        f"Produced by:\n\n```\n{command}\n```\n\n"
        f"Models {', '.join(args.models)}; policies {', '.join(args.policies)}; recipe `{RECIPE}` for {budget}; "
        f"pretraining seeds {', '.join(map(str, args.pretrain_seed_list))}. Every policy trains on the same "
        f"prepared instances (dynamic masking over one folder; the same order for the same seed). Corpus: "
        f"{', '.join(Path(c).name for c in args.corpus)}"
        f"{f' (about {args.corpus_chars:,} characters, split evenly over the files)' if args.corpus_chars else ''}"
        f", every {HELDOUT_EVERY}th document held out for evaluation. The random-init rows are `bertwwm init` "
        f"with each pretraining seed: the pretraining runs' starting weights, never trained.\n\n"
        f"Fine-tuning: {args.seeds} seed(s) per model, batch {FINETUNE_BATCH_SIZE}, finetune's defaults for "
        f"the model's size{f' except lr {args.finetune_lr:g}' if args.finetune_lr else ''}"
        f"{f', {args.epochs:g} epoch(s)' if args.epochs else ''}. {subsets} ({args.task_data_dir}). The "
        f"tables show dev scores with the official metrics (test scores are in each run's results.jsonl).\n\n"
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}; "
        f"wall time of this invocation {seconds / 3600:.2f} h (finished runs are reused).\n\n"
        f"{steps_note(args, runs)}"
        "## Fine-tuning\n\n"
        "Each pretraining seed's score is its mean dev score over the fine-tuning seeds. \"max (mean)\" is over "
        "all pretraining x fine-tuning runs, as in the report; \"sd pretrain seeds\" is the standard deviation "
        "over pretraining seeds of those per-seed means (the pretraining-seed variance); \"sd finetune seeds\" "
        "the pooled standard deviation over fine-tuning seeds within a pretraining seed. A difference "
        "between policies smaller than about twice the pretraining-seed sd is not a finding.\n\n"
        f"{finetune_tables(rows)}\n"
        "## Pretraining (held-out text)\n\n"
        "Mean ± sd over pretraining seeds at each run's last step. \"Own masks\": the run's own policy at "
        "15% (what `pretrain` logs; a policy's masks are harder or easier to fill than another's, so these "
        "columns do not compare policies); the unigram loss is that of the same masked tokens under their "
        "training-text frequencies (a model at it predicts from frequency alone). \"Common masks\": the same "
        "15% whole-word or character masks for every model, so these columns do compare them.\n\n"
        f"{pretraining_table(runs)}\n![ablation](ablation.png)\n")
    atomic_write_text(docs / "results.md", text)


def cases_of(rows: list[dict]) -> list[dict]:
    cases = []
    for r in rows:
        for metric, s in r["stats"].items():
            cases.append({"model": r["model"], "policy": r["policy"], "task": r["task"], "metric": metric,
                          **{k: s[k] for k in ("max", "mean", "std", "n", "pretrain_seeds", "finetune_seeds",
                                                "seed_means", "sd_pretrain_seeds", "sd_finetune_seeds")}})
    return cases


# ------------------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    from bertwwm.core.errors import UserError
    from bertwwm.pretrain import load_recipe
    from bertwwm.report import read_results, summarize

    hf_logging.set_verbosity_error()  # the expected "new task head" load report, once per seed, buries progress
    if args.no_progress:
        from bertwwm.finetune import quiet_progress_bars

        quiet_progress_bars()  # transformers' "Loading weights" bars too
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_settings(args, out)
        recipe, _ = load_recipe(RECIPE)
        length, eval_instances = recipe["phases"][-1]["max_seq_length"], recipe["train"]["eval_instances"]
        train_text, heldout_text = split_corpus(args, out)
        data = prepare_folder(train_text, out / f"data-{length}", args, length)
        heldout = prepare_folder(heldout_text, out / f"heldout-{length}", args, length)
        common = CommonHeldout(data, heldout, recipe["phases"][-1], recipe["masking"]["mask_prob"], eval_instances)
        runs, finetuned = [], {}  # finetuned: (model, policy, task) -> {pretraining seed: summary}
        for seed in args.pretrain_seed_list:  # seed by seed: a stopped ablation has complete seeds
            for model in args.models:
                models = {RANDOM_INIT: random_init_model(out, model, seed)}
                runs.append({"model": model, "policy": RANDOM_INIT, "seed": seed, "steps": 0, "heldout": {},
                             "common": common.score(models[RANDOM_INIT]), "folder": str(models[RANDOM_INIT])})
                for policy in args.policies:
                    final = models[policy] = pretrain_model(args, data, heldout, out, model, policy, seed)
                    own = last_eval(final.parent)
                    runs.append({"model": model, "policy": policy, "seed": seed, "steps": own.pop("step", None),
                                 "heldout": own, "common": common.score(final), "folder": str(final.parent)})
                for task in args.tasks:
                    for policy, folder in models.items():
                        name = f"{model}-{policy}-seed{seed}"
                        results = read_results(finetune_model(args, out, folder, name, task))
                        finetuned.setdefault((model, policy, task), {})[seed] = summarize(results)
    except UserError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    order = [(m, p) for m in args.models for p in (*args.policies, RANDOM_INIT)]
    rows = [{"model": m, "policy": p, "task": t, "stats": combine(finetuned[(m, p, t)])}
            for t in args.tasks for m, p in order]
    runs.sort(key=lambda r: (order.index((r["model"], r["policy"])), r["seed"]))
    write_results(args, rows, runs, Path(args.docs), time.perf_counter() - started)
    print((Path(args.docs) / "results.md").read_text(encoding="utf-8"))
    cases = cases_of(rows)
    pretraining = [{k: r[k] for k in ("model", "policy", "seed", "steps", "heldout", "common")} for r in runs]
    print(json.dumps({"cases": cases, "pretraining": pretraining,
                      "means": {f"{c['model']} {c['policy']} {c['task']} {c['metric']}": round(c["mean"], 2)
                                for c in cases}}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
