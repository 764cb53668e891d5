"""A run's data files and subsets: which files a run reads, splitting a single-file task, stratified samples.

Where a task has only one of train and dev, the file is split 80/20 under a fixed seed (MRC by passage) and
both parts are written in the task's own format under DIR/data/, so `bertwwm evaluate` can score against them.
`--max-train-examples` / `--max-eval-examples` keep a stratified sample (by label, CJRC domain or MRC
article), the same for every seed and model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from bertwwm.core.errors import UserError
from bertwwm.finetune.settings import Settings
from bertwwm.tasks.registry import CJRC, Task, task_file

SPLIT_SEED = 20190620  # fixed: a task with a single file is split the same way on every machine
SPLIT_DEV_FRACTION = 0.2


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


def _split_single_file(task: Task, source: Path, out: Path) -> tuple[Path, Path, str]:
    """(train file, dev file, note): `source` split into OUT/data/, in the task's own format."""
    train_path, dev_path = out / "data" / f"train{task.data_suffix}", out / "data" / f"dev{task.data_suffix}"
    if not (train_path.is_file() and dev_path.is_file()):
        train, dev = _split(task, task.read(source))
        task.write(train_path, train, task.labels)
        task.write(dev_path, dev, task.labels)
    note = (f"{task.name} has only {source.name} here: split it {1 - SPLIT_DEV_FRACTION:.0%} train / "
            f"{SPLIT_DEV_FRACTION:.0%} dev (seed {SPLIT_SEED}{', by passage' if task.is_mrc else ''}) "
            f"into {train_path.parent}")
    return train_path, dev_path, note


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
        files["train"], files["dev"], note = _split_single_file(task, Path(files["train"] or files["dev"]), out)
        print(f"bertwwm finetune: note: {note}", file=sys.stderr)
    settings.train, settings.dev = str(files["train"]), str(files["dev"])
    settings.test = str(files["test"]) if files["test"] else None
    settings.split_note = note
    return settings


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


def limit_examples(task: Task, split: str, examples: list, n: int | None, samples: dict) -> list:
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
