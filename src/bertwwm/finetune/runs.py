"""The multi-seed runner: one run folder, one fresh fine-tuning per seed, resumable.

Each seed trains a fresh copy of the pretrained model and is scored with the task's official metric on dev
(and test when there is a test file). Results go to DIR/results.jsonl, one line per finished seed, each
write atomic; re-running the same command skips finished seeds, so a killed run resumes where it stopped
(a seed that was interrupted starts over). DIR/run.json holds the settings; a resume with other settings is
refused. Per seed: DIR/seed-K/{train_log.jsonl, dev_predictions.*, test_predictions.*} in the official
submission formats. The best seed's model is kept in DIR/best-model (loadable with transformers, plus
bertwwm_task.json for `bertwwm predict`).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from bertwwm import __version__
from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_path, atomic_write_json, atomic_write_text
from bertwwm.finetune.data import limit_examples, resolve_files
from bertwwm.finetune.encoding import Encoded
from bertwwm.finetune.loop import pick_device, predict_examples, score, train_model
from bertwwm.finetune.settings import Settings, default_settings
from bertwwm.report import read_results  # report reads results.jsonl; finetune resumes from it (never the reverse)
from bertwwm.tasks import readers
from bertwwm.tasks.registry import Task, get_task, with_classes


def write_results(out: Path, results: list[dict]) -> None:
    """DIR/results.jsonl, rewritten whole and atomically: a crash leaves the previous complete file, never
    half a line."""
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))


def _same_setting(key: str, before, now) -> bool:
    """Data files count as the same when moved (a run folder copied elsewhere, its split files with it)."""
    if before == now:
        return True
    if key in ("train", "dev", "test") and before and now:
        a, b = Path(before), Path(now)
        return a.name == b.name and (not a.exists() or a.stat().st_size == b.stat().st_size)
    return False


def _keep_settings(out: Path, settings: Settings) -> Path:
    """Write DIR/run.json; once a seed has finished, refuse settings other than the ones it holds."""
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
    return run_file


def _encode_splits(task: Task, settings: Settings, tokenizer, run_file: Path) -> tuple[Encoded, dict[str, Encoded]]:
    """(train, {"dev": ..., "test": ...}) tokenised once for all seeds; samples are noted in run.json."""
    samples: dict = {}
    train_examples = task.read(settings.train)
    if task.is_mrc:  # an answer that is not in its context would be trained on as "no answer"
        train_examples, unanchored = readers.drop_unanchored(train_examples)
        if unanchored:
            print(f"bertwwm finetune: note: {unanchored} training questions skipped: none of their answers occurs "
                  f"in their context ({settings.train})", file=sys.stderr)
    train = Encoded(task, limit_examples(task, "train", train_examples, settings.max_train_examples, samples),
                    tokenizer, settings)
    evals = {}
    for split in ("dev", "test") if settings.test else ("dev",):
        examples = limit_examples(task, split, task.read(getattr(settings, split)), settings.max_eval_examples,
                                  samples)
        evals[split] = Encoded(task, examples, tokenizer, settings)
    if samples:  # said on stderr and kept in run.json, beside the settings that asked for it
        for sample in samples.values():
            print(f"bertwwm finetune: note: {sample['note']}", file=sys.stderr)
        atomic_write_json(run_file, {**json.loads(run_file.read_text(encoding="utf-8")), "samples": samples})
    return train, evals


def _save_model(out: Path, model, tokenizer, settings: Settings, seed: int, dev_score: float) -> None:
    from bertwwm.tasks.heads import TASK_FILE

    with atomic_path(out / "best-model") as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        (tmp / "vocab.txt").write_text("".join(t + "\n" for t, _ in vocab), encoding="utf-8")
        (tmp / TASK_FILE).write_text(json.dumps({**asdict(settings), "seed": seed, "dev_score": dev_score},
                                                ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _run_seed(task: Task, model: str, settings: Settings, seed: int, seed_dir: Path, train: Encoded,
              evals: dict[str, Encoded], device, eval_batch_size: int | None, progress: bool):
    """(results record, fine-tuned model) of one seed; its log and predictions are written to seed_dir."""
    from transformers import set_seed

    from bertwwm.tasks.heads import load_pretrained

    set_seed(seed)
    net, _ = load_pretrained(task, model)  # fresh weights; the head is initialised under this seed
    train_stats = train_model(net, train, settings, seed, device, seed_dir / "train_log.jsonl", progress)
    record = {"task": task.name, "model": model, "seed": seed, "task_version": task.version,
              "bertwwm_version": __version__, **train_stats}
    for split, data in evals.items():
        t0 = time.perf_counter()
        preds = predict_examples(task, net, data, settings, eval_batch_size or settings.batch_size * 2, device,
                                 progress)
        record[f"{split}_examples_per_second"] = len(data.examples) / max(time.perf_counter() - t0, 1e-9)
        task.predictions.write(seed_dir / f"{split}_predictions{task.prediction_suffix}", preds)
        record[split] = score(task, data.examples, preds)
        record[f"{split}_score"] = task.metric_value(record[split])
    return record, net


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

    from bertwwm.modeling import zoo
    from bertwwm.tasks.heads import load_tokenizer

    task = with_classes(get_task(task) if isinstance(task, str) else task, classes)
    out = Path(out)
    seed_list = list(range(1, seeds + 1)) if isinstance(seeds, int) else list(seeds)
    model_path = zoo.resolve_model(model)  # a wrong --model fails before anything is written
    hidden = getattr(zoo.load_bert_config(model), "hidden_size", None)
    settings = resolve_files(task, default_settings(task, model, hidden, **overrides), data_dir, out)
    if classes is not None:
        settings.extra = {**settings.extra, "classes": list(task.labels)}
    run_file = _keep_settings(out, settings)
    results = read_results(out)
    done = {r["seed"] for r in results}
    todo = [s for s in seed_list if s not in done]
    if not todo:
        return results
    dev_device = pick_device(device)
    tokenizer = load_tokenizer(model_path)
    train, evals = _encode_splits(task, settings, tokenizer, run_file)
    best = max((r["dev_score"] for r in results), default=-math.inf)
    for seed in todo:
        seed_dir = out / f"seed-{seed}"
        if seed_dir.exists():
            shutil.rmtree(seed_dir)  # an interrupted seed starts over
        seed_dir.mkdir(parents=True)
        record, net = _run_seed(task, model, settings, seed, seed_dir, train, evals, dev_device, eval_batch_size,
                                progress)
        if save_model and record["dev_score"] > best:
            _save_model(out, net, tokenizer, settings, seed, record["dev_score"])
            best = record["dev_score"]
        results.append(record)
        write_results(out, results)
        print(json.dumps({k: record[k] for k in record if k in ("seed", "dev", "test")}, ensure_ascii=False),
              flush=True)
        del net
        if dev_device.type == "cuda":
            torch.cuda.empty_cache()
    return results
