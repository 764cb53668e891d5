"""`bertwwm finetune TASK --model M --seeds N --out DIR`: fine-tune on a benchmark over many seeds.

Each seed trains a fresh copy of the pretrained model and is scored with the task's official metric on dev
(and test when there is a test file). Results go to DIR/results.jsonl, one line per finished seed, each
write atomic; re-running the same command skips finished seeds, so a killed run resumes where it stopped
(a seed that was interrupted starts over). Per seed: DIR/seed-K/{train_log.jsonl, dev_predictions.*,
test_predictions.*} in the official submission formats. The best seed's model is kept in DIR/best-model
(loadable with transformers, plus bertwwm_task.json for `bertwwm predict`).

Batches are bucketed by length (sorted within chunks of 50 batches, chunks and batches shuffled), so padding
stays small without changing what a seed sees from epoch to epoch in expectation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bertwwm import __version__
from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path, atomic_write_json, atomic_write_text
from bertwwm.report import read_results  # report reads results.jsonl; finetune resumes from it (never the reverse)
from bertwwm.tasks import metrics, readers
from bertwwm.tasks.registry import CJRC, Task, get_task, task_file, with_classes

SPLIT_SEED = 20190620  # fixed: a task with a single file is split the same way on every machine
SPLIT_DEV_FRACTION = 0.2
BUCKET_CHUNK = 50  # batches per length-sorted chunk
PRED_SUFFIX = {"tsv": ".tsv", "squad": ".json", "cjrc": ".json"}


@dataclass
class Settings:
    """Everything that defines a run; stored in DIR/run.json and checked when a run resumes."""

    task: str
    model: str
    learning_rate: float
    epochs: float
    batch_size: int
    max_seq_length: int
    doc_stride: int
    max_query_length: int
    max_answer_length: int
    warmup_proportion: float = 0.1
    weight_decay: float = 0.01
    gradient_accumulation: int = 1
    long_text: str = "truncate"  # classification: "truncate", or "window" (windows, logits averaged)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    split_note: str | None = None
    extra: dict = field(default_factory=dict)


# Learning rate and epochs by model width, used when --lr / --epochs are not given. The report's values (the
# task registry's) are for BERT-base and larger; a 2-layer, 128-wide model fine-tuned with them stays near the
# majority class. Measured on dev sets with `--lr-grid` (docs/finetune.md, "Defaults by model size").
SIZE_DEFAULTS: tuple[tuple[int, dict[str, tuple[float, float]]], ...] = (
    # (largest hidden size, {task kind: (learning rate, epochs)})
    (128, {"classification": (1e-3, 3.0), "mrc": (1e-3, 3.0), "cjrc": (1e-3, 3.0)}),
    (256, {"classification": (3e-4, 3.0), "mrc": (3e-4, 3.0), "cjrc": (3e-4, 3.0)}),
    (512, {"classification": (1e-4, 3.0), "mrc": (1e-4, 2.0), "cjrc": (1e-4, 2.0)}),
)


def size_defaults(task: Task, hidden_size: int | None) -> tuple[float, float, str]:
    """(learning rate, epochs, where they come from) for a model of this width on this task."""
    for limit, table in SIZE_DEFAULTS:
        if hidden_size is not None and hidden_size <= limit:
            lr, epochs = table[task.kind]
            return lr, epochs, f"bertwwm's defaults for models of hidden size <= {limit}"
    return task.learning_rate, task.epochs, "the report's hyper-parameters for the task"


def default_settings(task: Task, model: str, hidden_size: int | None = None, **overrides) -> Settings:
    lr, epochs, source = size_defaults(task, hidden_size)
    values = dict(task=task.name, model=model, learning_rate=lr, epochs=epochs,
                  batch_size=task.batch_size, max_seq_length=task.max_seq_length, doc_stride=task.doc_stride,
                  max_query_length=task.max_query_length, max_answer_length=task.max_answer_length)
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    values.setdefault("extra", {})
    if "learning_rate" not in given or "epochs" not in given:
        values["extra"] = {**values["extra"], "defaults_from": source}
    s = Settings(**values)
    if s.learning_rate <= 0 or s.epochs <= 0 or s.batch_size <= 0 or s.max_seq_length < 16:
        raise UserError("learning rate, epochs and batch size must be positive and max length at least 16")
    if s.batch_size % s.gradient_accumulation:
        raise UserError("--batch-size must be a multiple of --gradient-accumulation")
    return s


# ------------------------------------------------------------------------------------------------ data


def _write_examples(task: Task, path: Path, examples: list) -> None:
    if task.is_mrc:
        readers.write_mrc(path, examples, cjrc=task.kind == CJRC)
    elif task.name == "thucnews":
        readers.write_thucnews(path, examples, task.labels)
    else:
        readers.write_table(path, examples)


def _split(task: Task, examples: list) -> tuple[list, list]:
    """Deterministic train/dev split; MRC splits by context so no passage is in both parts."""
    rng = np.random.default_rng(SPLIT_SEED)
    if task.is_mrc:
        ids = sorted({e.context_id for e in examples})
        order = rng.permutation(len(ids))
        n_dev = max(1, int(round(len(ids) * SPLIT_DEV_FRACTION)))
        dev_ids = {ids[i] for i in order[:n_dev]}
        return [e for e in examples if e.context_id not in dev_ids], [e for e in examples if e.context_id in dev_ids]
    order = rng.permutation(len(examples))
    n_dev = max(1, int(round(len(examples) * SPLIT_DEV_FRACTION)))
    dev = sorted(order[:n_dev])
    train = sorted(order[n_dev:])
    return [examples[i] for i in train], [examples[i] for i in dev]


def resolve_files(task: Task, settings: Settings, data_dir: str | Path | None, out: Path) -> Settings:
    """Fill in settings.train/dev/test; where a task has no train file, split one deterministically.

    The split files are written (in the task's own format) under DIR/data/, so `bertwwm evaluate` can score
    the dev predictions against DIR/data/dev.* later.
    """
    files = {split: getattr(settings, split) or task_file(task, split, data_dir) for split in ("train", "dev", "test")}
    for split, f in files.items():
        if f is not None and not Path(f).is_file():
            raise UserError(f"{split} file not found", f)
    if files["train"] is None and files["dev"] is None:
        where = f"{Path(data_dir) / task.name}" if data_dir else "(no --data-dir)"
        raise UserError(f"no train or dev file for {task.name} in {where}; give --train/--dev or --data-dir")
    note = None
    if files["train"] is None or files["dev"] is None:
        source = Path(files["train"] or files["dev"])
        ext = ".json" if task.is_mrc else ".txt" if task.name == "thucnews" else ".tsv"
        train_path, dev_path = out / "data" / f"train{ext}", out / "data" / f"dev{ext}"
        if not (train_path.is_file() and dev_path.is_file()):
            train, dev = _split(task, task.read(source))
            _write_examples(task, train_path, train)
            _write_examples(task, dev_path, dev)
        note = (f"{task.name} has only {source.name} here: split it {1 - SPLIT_DEV_FRACTION:.0%} train / "
                f"{SPLIT_DEV_FRACTION:.0%} dev (seed {SPLIT_SEED}{', by passage' if task.is_mrc else ''}) "
                f"into {train_path.parent}")
        print(f"bertwwm finetune: note: {note}", file=sys.stderr)
        files["train"], files["dev"] = train_path, dev_path
    settings.train, settings.dev = str(files["train"]), str(files["dev"])
    settings.test = str(files["test"]) if files["test"] else None
    settings.split_note = note
    return settings


class Encoded:
    """A split, tokenised once: the model inputs (windows for MRC) and what is needed to decode and score."""

    def __init__(self, task: Task, examples: list, tokenizer, settings: Settings):
        self.task, self.examples = task, examples
        if task.is_mrc:
            from bertwwm.tasks.mrc import build_features

            self.features = build_features(examples, tokenizer, settings.max_seq_length, settings.doc_stride,
                                           settings.max_query_length)
            self.input_ids = self.features.input_ids
            self.token_type_ids = self.features.token_type_ids
            self.labels = {"start_positions": np.asarray(self.features.start_positions),
                           "end_positions": np.asarray(self.features.end_positions)}
            if task.kind == CJRC:
                self.labels["answer_class"] = np.asarray(self.features.answer_class)
        else:
            pairs = [e.text_b is not None for e in examples]
            if any(pairs) and not all(pairs):
                raise UserError("mixed single sentences and sentence pairs in one file")
            index = {label: i for i, label in enumerate(task.labels)}
            unknown = sorted({e.label for e in examples if e.label is not None and e.label not in index})
            if unknown:
                raise UserError(f"labels {unknown[:5]} are not labels of {task.name} ({', '.join(task.labels)})")
            labels = [index.get(e.label, -100) for e in examples]
            if settings.long_text == "window" and not any(pairs):
                self._windows(examples, tokenizer, settings, labels)
            else:
                enc = tokenizer([e.text_a for e in examples],
                                [e.text_b for e in examples] if all(pairs) else None, truncation=True,
                                max_length=settings.max_seq_length, return_attention_mask=False, verbose=False)
                self.input_ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
                self.token_type_ids = [np.asarray(x, dtype=np.int64) for x in enc["token_type_ids"]]
                self.example_index = np.arange(len(examples))
                self.labels = {"labels": np.asarray(labels, dtype=np.int64)}
        self.lengths = np.asarray([len(x) for x in self.input_ids])

    def _windows(self, examples: list, tokenizer, settings: Settings, labels: list[int]) -> None:
        """Long single texts (THUCNews articles): windows of max_seq_length tokens, doc_stride apart, each
        trained on the document's label; at prediction time the windows' logits are averaged."""
        from bertwwm.text.tokens import CLS_ID, SEP_ID

        enc = tokenizer([e.text_a for e in examples], add_special_tokens=False, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)
        room = settings.max_seq_length - 2
        step = max(1, min(settings.doc_stride, room))
        self.input_ids, owner = [], []
        for ei, ids in enumerate(enc["input_ids"]):
            start = 0
            while True:
                self.input_ids.append(np.asarray([CLS_ID, *ids[start:start + room], SEP_ID], dtype=np.int64))
                owner.append(ei)
                if start + room >= len(ids):
                    break
                start += step
        self.token_type_ids = [np.zeros_like(x) for x in self.input_ids]
        self.example_index = np.asarray(owner)
        self.labels = {"labels": np.asarray(labels, dtype=np.int64)[self.example_index]}

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, indices: Sequence[int], device, with_labels: bool = True) -> dict:
        import torch

        width = int(self.lengths[indices].max())
        ids = np.zeros((len(indices), width), dtype=np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            ids[row, :n] = self.input_ids[i]
            types[row, :n] = self.token_type_ids[i]
            mask[row, :n] = 1
        out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
        if with_labels:
            out.update({k: v[indices] for k, v in self.labels.items()})
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in out.items()}


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of similar length. With rng: shuffled, sorted within chunks, batch order shuffled.
    Without: sorted by length overall (evaluation; results are put back in the original order)."""
    n = len(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    order = rng.permutation(n)
    batches = []
    chunk = batch_size * BUCKET_CHUNK
    for c in range(0, n, chunk):
        part = order[c:c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------- train / predict


def pick_device(name: str | None = None):
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _autocast(device):
    import contextlib

    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_model(model, data: Encoded, batch_size: int, device, progress: bool = False, desc: str = "eval") -> dict:
    """Logits for every item of `data`, in its original order (numpy arrays; MRC logits trimmed to length)."""
    import torch
    from tqdm import tqdm

    model.eval()
    out: dict[str, list] = {}
    batches = length_batches(data.lengths, batch_size, None)
    with torch.inference_mode(), _autocast(device):
        for idx in tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False):
            result = model(**data.batch(idx, device, with_labels=False))
            for key in ("logits", "start_logits", "end_logits", "class_logits"):
                value = getattr(result, key, None)
                if value is None:
                    continue
                value = value.float().cpu().numpy()
                store = out.setdefault(key, [None] * len(data))
                for row, i in enumerate(idx):
                    store[i] = value[row, : data.lengths[i]] if key in ("start_logits", "end_logits") else value[row]
    return out


def predict_examples(task: Task, model, data: Encoded, settings: Settings, batch_size: int, device,
                     progress: bool = False) -> dict[str, str] | list[str]:
    """Predictions in the task's terms: answer text per question id (MRC) or a label per example."""
    logits = run_model(model, data, batch_size, device, progress)
    if task.is_mrc:
        from bertwwm.tasks.mrc import decode_answers

        class_logits = np.stack(logits["class_logits"]) if "class_logits" in logits else None
        return decode_answers(data.examples, data.features, logits["start_logits"], logits["end_logits"],
                              class_logits, max_answer_length=settings.max_answer_length)
    # Average the logits of an example's windows (one window per example unless long_text="window").
    summed = np.zeros((len(data.examples), len(task.labels)))
    np.add.at(summed, data.example_index, np.stack(logits["logits"]))
    return [task.labels[int(i)] for i in summed.argmax(axis=1)]


def score(task: Task, examples: list, predictions) -> dict:
    if task.metric == "cmrc2018":
        return metrics.cmrc2018_scores(examples, predictions)
    if task.metric == "cjrc":
        return metrics.cjrc_scores(examples, predictions)
    return metrics.accuracy([e.label for e in examples], list(predictions))


def train_model(model, data: Encoded, settings: Settings, seed: int, device, log_path: Path | None = None,
                progress: bool = True) -> dict:
    """Fine-tune in place: AdamW, linear warm-up over the first 10% of steps then linear decay, clip 1.0."""
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from bertwwm.modeling.optim import parameter_groups

    rng = np.random.default_rng(seed)
    model.to(device)
    model.train()
    groups = parameter_groups(model, settings.weight_decay)  # BERT's rule: no decay on bias and LayerNorm
    try:  # the fused kernel (CPU and CUDA, torch >= 2.4) is what Trainer uses too; it saves a pass per step
        optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(groups, lr=settings.learning_rate)
    per_epoch = math.ceil(len(data) / settings.batch_size)
    total = max(1, math.ceil(per_epoch * settings.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_proportion), total)
    micro = settings.batch_size // settings.gradient_accumulation
    step, seen, losses, started = 0, 0, [], time.perf_counter()
    log = open(log_path, "a", encoding="utf-8") if log_path else None
    board = None
    if log_path is not None:
        from torch.utils.tensorboard import SummaryWriter

        board = SummaryWriter(str(log_path.parent / "tensorboard"))
    bar = tqdm(total=total, desc=f"seed {seed}", unit="step", disable=not progress)
    try:
        while step < total:
            for batch in length_batches(data.lengths, settings.batch_size, rng):
                if step >= total:
                    break
                optimizer.zero_grad(set_to_none=True)
                batch_loss = 0.0
                for m in range(0, len(batch), micro):
                    part = batch[m:m + micro]
                    with _autocast(device):
                        loss = model(**data.batch(part, device)).loss * (len(part) / len(batch))
                    loss.backward()
                    batch_loss += float(loss.detach())
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                seen += len(batch)
                losses.append(batch_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{batch_loss:.4f}")
                if log and (step % 20 == 0 or step == total):
                    log.write(json.dumps({"step": step, "epoch": round(step / per_epoch, 3), "loss": batch_loss,
                                          "lr": scheduler.get_last_lr()[0]}) + "\n")
                    log.flush()
                if board is not None:
                    board.add_scalar("train/loss", batch_loss, step)
                    board.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
    finally:
        bar.close()
        if log:
            log.close()
        if board is not None:
            board.close()
    seconds = time.perf_counter() - started
    return {"steps": step, "examples_per_second": seen / max(seconds, 1e-9), "train_seconds": seconds,
            "final_loss": float(np.mean(losses[-20:])) if losses else None}


# ------------------------------------------------------------------------------------------ the runner


def _save_model(out: Path, model, tokenizer, settings: Settings, seed: int, dev_score: float) -> None:
    from bertwwm.tasks.heads import TASK_FILE

    with atomic_path(out / "best-model") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        (tmp / TASK_FILE).write_text(json.dumps({**asdict(settings), "seed": seed, "dev_score": dev_score},
                                                ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def sample_group(task: Task, example) -> str | None:
    """The stratum of an example for --max-*-examples: its label, its CJRC domain, its MRC article."""
    if task.kind == CJRC:
        return example.domain
    if task.is_mrc:
        return example.article or example.context_id
    return example.label


def stratified_sample(examples: list, n: int, groups: Sequence, seed: int = SPLIT_SEED) -> list:
    """n examples, every group holding its share of them (within one: largest remainders round the
    quotas), drawn at random under `seed` within each group and kept in file order.

    Official files are often sorted (THUCNews test by class in blocks of 1,000, CJRC civil before
    criminal): the first n rows would be one class or one domain only.
    """
    if n >= len(examples):
        return list(examples)
    rng = np.random.default_rng(seed)
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keys = list(members)
    quota = np.asarray([len(members[g]) for g in keys], dtype=np.float64) * n / len(examples)
    counts = np.floor(quota).astype(int)
    # the seats left go to the largest remainders; a random key breaks ties reproducibly
    order = np.lexsort((rng.random(len(keys)), -(quota - counts)))
    counts[order[: n - int(counts.sum())]] += 1
    chosen = []
    for g, k in zip(keys, counts):
        chosen.extend(rng.choice(members[g], size=int(k), replace=False).tolist())
    return [examples[i] for i in sorted(chosen)]


def _limit(task: Task, split: str, examples: list, n: int | None, samples: dict) -> list:
    """All examples, or a seeded stratified sample of n of them (recorded in `samples` for run.json)."""
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise UserError(f"--max-{'train' if split == 'train' else 'eval'}-examples must be at least 1")
    by = "domain" if task.kind == CJRC else "article" if task.is_mrc else "label"
    kept = stratified_sample(examples, n, [sample_group(task, e) for e in examples])
    unit = "questions" if task.is_mrc else "examples"
    samples[split] = {"kept": len(kept), "of": len(examples), "by": by, "seed": SPLIT_SEED,
                      "note": f"{split}: a stratified sample of {len(kept):,} of {len(examples):,} {unit} "
                              f"(by {by}, seed {SPLIT_SEED}), not the first {len(kept):,}"}
    return kept


def _same_setting(key: str, before, now) -> bool:
    """Data files count as the same when moved (a run folder copied elsewhere, its split files with it)."""
    if before == now:
        return True
    if key in ("train", "dev", "test") and before and now:
        a, b = Path(before), Path(now)
        return a.name == b.name and (not a.exists() or a.stat().st_size == b.stat().st_size)
    return False


def finetune(task: str | Task, model: str, out: str | Path, seeds: int | Sequence[int] = 10,
             data_dir: str | Path | None = None, save_model: bool = True, device: str | None = None,
             eval_batch_size: int | None = None, progress: bool = True,
             classes: str | Path | Sequence[str] | None = None, **overrides) -> list[dict]:
    """Fine-tune `model` on `task` once per seed; returns the results of all seeds (finished earlier or now).

    overrides: any Settings field (learning_rate, epochs, batch_size, max_seq_length, doc_stride,
    max_answer_length, train, dev, test, max_train_examples, ...); unset ones take the task's defaults.
    classes: THUCNews class names (or a class.txt) when not the official ten.
    """
    import torch

    task = with_classes(get_task(task) if isinstance(task, str) else task, classes)
    out = Path(out)
    seed_list = list(range(1, seeds + 1)) if isinstance(seeds, int) else list(seeds)
    from transformers import set_seed

    from bertwwm.modeling import zoo
    from bertwwm.tasks.heads import load_pretrained, load_tokenizer

    model_path = zoo.resolve_model(model)  # a wrong --model fails before anything is written
    hidden = getattr(zoo.load_bert_config(model), "hidden_size", None)
    settings = resolve_files(task, default_settings(task, model, hidden, **overrides), data_dir, out)
    if classes is not None:
        settings.extra = {**settings.extra, "classes": list(task.labels)}
    run_file = out / "run.json"
    if run_file.is_file() and read_results(out):  # settings may change freely until a seed has finished
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        differing = [k for k, v in asdict(settings).items()
                     if k != "split_note" and not _same_setting(k, previous.get(k), v)]
        if differing:
            raise UserError(f"{out} holds a run with other settings ({', '.join(differing)}); use a new --out",
                            run_file)
    else:
        atomic_write_json(run_file, asdict(settings))
    results = read_results(out)
    done = {r["seed"] for r in results}
    todo = [s for s in seed_list if s not in done]
    if not todo:
        return results
    dev_device = pick_device(device)
    tokenizer = load_tokenizer(model_path)
    samples: dict = {}
    train_examples = task.read(settings.train)
    if task.is_mrc:  # an answer that is not in its context would be trained on as "no answer"
        train_examples, unanchored = readers.drop_unanchored(train_examples)
        if unanchored:
            print(f"bertwwm finetune: note: {unanchored} training questions skipped: none of their answers occurs "
                  f"in their context ({settings.train})", file=sys.stderr)
    train = Encoded(task, _limit(task, "train", train_examples, settings.max_train_examples, samples),
                    tokenizer, settings)
    evals = {"dev": Encoded(task, _limit(task, "dev", task.read(settings.dev), settings.max_eval_examples, samples),
                            tokenizer, settings)}
    if settings.test:
        evals["test"] = Encoded(task, _limit(task, "test", task.read(settings.test), settings.max_eval_examples,
                                             samples), tokenizer, settings)
    if samples:  # said on stderr and kept in run.json, beside the settings that asked for it
        for sample in samples.values():
            print(f"bertwwm finetune: note: {sample['note']}", file=sys.stderr)
        atomic_write_json(run_file, {**json.loads(run_file.read_text(encoding="utf-8")), "samples": samples})
    best = max((r["dev_score"] for r in results), default=-math.inf)
    suffix = PRED_SUFFIX[task.prediction_format]
    for seed in todo:
        seed_dir = out / f"seed-{seed}"
        if seed_dir.exists():
            shutil.rmtree(seed_dir)  # an interrupted seed starts over
        seed_dir.mkdir(parents=True)
        set_seed(seed)
        net, _ = load_pretrained(task, model)  # fresh weights; the head is initialised under this seed
        train_stats = train_model(net, train, settings, seed, dev_device, seed_dir / "train_log.jsonl", progress)
        record = {"task": task.name, "model": model, "seed": seed, "task_version": task.version,
                  "bertwwm_version": __version__, **train_stats}
        for split, data in evals.items():
            t0 = time.perf_counter()
            preds = predict_examples(task, net, data, settings, eval_batch_size or settings.batch_size * 2,
                                     dev_device, progress)
            record[f"{split}_examples_per_second"] = len(data.examples) / max(time.perf_counter() - t0, 1e-9)
            readers.write_predictions(seed_dir / f"{split}_predictions{suffix}", task.prediction_format, preds)
            record[split] = score(task, data.examples, preds)
            record[f"{split}_score"] = task.metric_value(record[split])
        if save_model and record["dev_score"] > best:
            _save_model(out, net, tokenizer, settings, seed, record["dev_score"])
            best = record["dev_score"]
        results.append(record)
        # Rewrite the whole file atomically: a crash leaves the previous complete file, never half a line.
        atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        print(json.dumps({k: record[k] for k in record if k in ("seed", "dev", "test")}, ensure_ascii=False),
              flush=True)
        del net
        if dev_device.type == "cuda":
            torch.cuda.empty_cache()
    return results


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
    atomic_write_text(out / "results.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen[1]))
    return grid


def grid_summary(grid: dict) -> str:
    best = grid["chosen_learning_rate"]
    others = ", ".join(f"{r['learning_rate']:g}: {r['dev_mean']:.2f}" for r in grid["grid"]
                       if r["learning_rate"] != best)
    row = next(r for r in grid["grid"] if r["learning_rate"] == best)
    return (f"lr grid: {best:g} won (mean dev {row['dev_mean']:.2f} over {row['seeds']} seed(s))"
            + (f"; {others}" if others else ""))


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1e-4,3e-4,1e-3, got {text!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bertwwm.tasks.registry import TASKS

    parser.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--model", required=True,
                        help="zoo name, hub id (hfl/chinese-roberta-wwm-ext), HF folder or TF-1 checkpoint")
    parser.add_argument("--out", required=True, help="run folder (re-run the same command to resume)")
    parser.add_argument("--seeds", type=int, default=10, help="number of seeds, 1..N (default 10)")
    parser.add_argument("--data-dir", default=os.environ.get("BERTWWM_TASKS_DIR", "data/tasks"),
                        help="folder with one sub-folder per task in the official file names "
                             "(default $BERTWWM_TASKS_DIR or data/tasks)")
    parser.add_argument("--train", help="train file (overrides --data-dir)")
    parser.add_argument("--dev", help="dev file (overrides --data-dir)")
    parser.add_argument("--test", help="test file (overrides --data-dir)")
    parser.add_argument("--lr", type=float, dest="learning_rate",
                        help="default: the report's best for the task (BERT-base and larger); smaller models "
                             "get bertwwm's defaults by model size (docs/finetune.md)")
    parser.add_argument("--lr-grid", type=_float_list, metavar="LR,LR,...",
                        help="try each learning rate over all seeds (OUT/lr-RATE) and keep the one with the best "
                             "mean dev score (OUT/grid.json)")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--gradient-accumulation", type=int, help="split each batch into N micro-batches")
    parser.add_argument("--max-seq-length", type=int)
    parser.add_argument("--doc-stride", type=int, help="MRC: context tokens between window starts")
    parser.add_argument("--max-answer-length", type=int, help="MRC: longest answer in tokens")
    parser.add_argument("--warmup-proportion", type=float, help="default 0.1")
    parser.add_argument("--long-text", choices=("truncate", "window"),
                        help="classification of long texts (THUCNews articles): truncate to --max-seq-length "
                             "(default), or cut windows --doc-stride apart and average their logits")
    parser.add_argument("--max-train-examples", type=int, metavar="N",
                        help="train on a stratified sample of N examples (by label; CJRC by domain, MRC by "
                             "article; the same sample for every seed and model)")
    parser.add_argument("--max-eval-examples", type=int, metavar="N",
                        help="score a stratified sample of N dev/test examples (as --max-train-examples)")
    parser.add_argument("--eval-batch-size", type=int)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--no-save-model", action="store_true", help="do not keep the best seed's model")
    parser.add_argument("--classes", metavar="FILE",
                        help="thucnews: class names, one per line, line i naming label index i "
                             "(default: the official ten, as in its class.txt)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (ours, nor transformers' loading / saving bars)")


def quiet_progress_bars() -> None:
    """--no-progress: transformers' "Loading weights" / "Writing model shards" bars and the hub's download
    bars are off too (for the rest of this process: the CLI runs one verb)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def run(args: argparse.Namespace) -> int:
    keys = ("learning_rate", "epochs", "batch_size", "gradient_accumulation", "max_seq_length", "doc_stride",
            "long_text",
            "max_answer_length", "warmup_proportion", "max_train_examples", "max_eval_examples", "train", "dev",
            "test")
    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.no_progress:
        quiet_progress_bars()
    common = dict(seeds=args.seeds, data_dir=args.data_dir, save_model=not args.no_save_model, device=args.device,
                  eval_batch_size=args.eval_batch_size, progress=not args.no_progress, classes=args.classes,
                  **{k: getattr(args, k) for k in keys})
    if args.lr_grid is not None:
        grid = finetune_grid(args.task, args.model, args.out, args.lr_grid, **common)
        print(grid_summary(grid), file=sys.stderr)
        results = read_results(args.out)
    else:
        results = finetune(args.task, args.model, args.out, **common)
    from bertwwm.report import summarize

    print(json.dumps(summarize(results), ensure_ascii=False))
    return 0
