"""Training and inference for one seed: the fine-tuning loop, logits for a split, predictions and scores.

`train_model` fine-tunes in place (AdamW, linear warm-up then decay, clipping at 1.0, bf16 autocast on
GPUs that have it) and logs to seed-K/train_log.jsonl and TensorBoard; `predict_examples` turns logits
into the task's predictions and `score` applies the task's official metric (its registry entry's scorer).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from bertwwm.finetune.encoding import Encoded, length_batches
from bertwwm.finetune.settings import Settings
from bertwwm.tasks.registry import Task


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
    """The task's official metric of `predictions` against `examples` (the scorer its registry entry names)."""
    return task.scorer(examples, predictions)


class _TrainLog:
    """seed-K/train_log.jsonl (every 20 steps and the last) and TensorBoard scalars (every step)."""

    def __init__(self, log_path: Path | None, total: int, per_epoch: int):
        self.total, self.per_epoch = total, per_epoch
        self.file = open(log_path, "a", encoding="utf-8") if log_path else None
        self.board = None
        if log_path is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(log_path.parent / "tensorboard"))

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.file and (step % 20 == 0 or step == self.total):
            self.file.write(json.dumps({"step": step, "epoch": round(step / self.per_epoch, 3), "loss": loss,
                                        "lr": lr}) + "\n")
            self.file.flush()
        if self.board is not None:
            self.board.add_scalar("train/loss", loss, step)
            self.board.add_scalar("train/lr", lr, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.board is not None:
            self.board.close()


def _adamw(model, settings: Settings):
    import torch

    from bertwwm.modeling.optim import parameter_groups

    groups = parameter_groups(model, settings.weight_decay)  # BERT's rule: no decay on bias and LayerNorm
    try:  # the fused kernel (CPU and CUDA, torch >= 2.4) is what Trainer uses too; it saves a pass per step
        return torch.optim.AdamW(groups, lr=settings.learning_rate, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=settings.learning_rate)


def _accumulated_loss(model, data: Encoded, batch, micro: int, device) -> float:
    """Forward and backward over `batch` in micro-batches of `micro`; the batch's mean loss."""
    batch_loss = 0.0
    for m in range(0, len(batch), micro):
        part = batch[m:m + micro]
        with _autocast(device):
            loss = model(**data.batch(part, device)).loss * (len(part) / len(batch))
        loss.backward()
        batch_loss += float(loss.detach())
    return batch_loss


def train_model(model, data: Encoded, settings: Settings, seed: int, device, log_path: Path | None = None,
                progress: bool = True) -> dict:
    """Fine-tune in place: AdamW, linear warm-up over the first 10% of steps then linear decay, clip 1.0."""
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    rng = np.random.default_rng(seed)
    model.to(device)
    model.train()
    optimizer = _adamw(model, settings)
    per_epoch = math.ceil(len(data) / settings.batch_size)
    total = max(1, math.ceil(per_epoch * settings.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(total * settings.warmup_proportion), total)
    micro = settings.batch_size // settings.gradient_accumulation
    step, seen, losses, started = 0, 0, [], time.perf_counter()
    log = _TrainLog(log_path, total, per_epoch)
    bar = tqdm(total=total, desc=f"seed {seed}", unit="step", disable=not progress)
    try:
        while step < total:
            for batch in length_batches(data.lengths, settings.batch_size, rng):
                if step >= total:
                    break
                optimizer.zero_grad(set_to_none=True)
                batch_loss = _accumulated_loss(model, data, batch, micro, device)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                seen += len(batch)
                losses.append(batch_loss)
                bar.update(1)
                bar.set_postfix(loss=f"{batch_loss:.4f}")
                log.step(step, batch_loss, scheduler.get_last_lr()[0])
    finally:
        bar.close()
        log.close()
    seconds = time.perf_counter() - started
    return {"steps": step, "examples_per_second": seen / max(seconds, 1e-9), "train_seconds": seconds,
            "final_loss": float(np.mean(losses[-20:])) if losses else None}
