"""What a run reports: metrics.jsonl and TensorBoard, the sums behind each log record, the progress bar,
and warnings on stderr."""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bertwwm.core.fileio import atomic_write_text
from bertwwm.pretrain.clock import Clock
from bertwwm.pretrain.config import PretrainConfig
from bertwwm.pretrain.distributed import Dist, all_reduce

METRICS = "metrics.jsonl"


def warn(message: str) -> None:
    print(f"bertwwm pretrain: {message}", file=sys.stderr, flush=True)


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and TensorBoard scalars; written by rank 0 only."""

    def __init__(self, run: Path, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        self.path = run / METRICS
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=resume_step)
        except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()
        if self.tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "phase"):
                    self.tb.add_scalar(f"{split}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


@dataclass
class StepStats:
    """Named sums over the steps of a logging window (summed over ranks)."""

    mlm_loss_sum: float = 0.0
    mlm_correct: float = 0.0
    mlm_count: float = 0.0
    nsp_loss_sum: float = 0.0
    nsp_correct: float = 0.0
    nsp_count: float = 0.0
    tokens: float = 0.0
    distill_kl_sum: float = 0.0
    started: float = field(default_factory=lambda: time.perf_counter())

    SUMS = ("mlm_loss_sum", "mlm_correct", "mlm_count", "nsp_loss_sum", "nsp_correct", "nsp_count", "tokens",
            "distill_kl_sum")

    def add(self, other: StepStats) -> None:
        for k in self.SUMS:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def finite(self) -> bool:
        return math.isfinite(self.mlm_loss_sum) and math.isfinite(self.nsp_loss_sum)

    def reduced(self, d: Dist) -> StepStats:
        values = all_reduce([getattr(self, k) for k in self.SUMS], d)
        return StepStats(*values, started=self.started)

    def record(self, step: int, phase: int, lr: float, grad_norm: float, batch: int, elapsed: float) -> dict:
        mlm_loss = self.mlm_loss_sum / max(self.mlm_count, 1)
        nsp_loss = self.nsp_loss_sum / self.nsp_count if self.nsp_count else 0.0
        record = {"step": step, "phase": phase + 1, "split": "train", "loss": mlm_loss + nsp_loss,
                  "mlm_loss": mlm_loss, "mlm_acc": self.mlm_correct / max(self.mlm_count, 1), "lr": lr,
                  "grad_norm": grad_norm, "batch_size": batch,
                  "tokens_per_s": self.tokens / max(time.perf_counter() - self.started, 1e-9), "elapsed_s": elapsed}
        if self.nsp_count:
            record.update(nsp_loss=nsp_loss, nsp_acc=self.nsp_correct / self.nsp_count)
        if self.distill_kl_sum:
            record.update(distill_kl=self.distill_kl_sum / max(self.mlm_count, 1))  # per masked token
        return record


class ProgressBar:
    """tqdm over steps, or over seconds of the time budget; rank 0 only."""

    def __init__(self, cfg: PretrainConfig, d: Dist, step: int, clock: Clock):
        self.bar, self.clock, self.timed = None, clock, cfg.time_budget is not None
        if d.main and cfg.progress:
            from tqdm import tqdm

            if self.timed:
                self.bar = tqdm(total=round(cfg.time_budget), initial=round(clock.elapsed()),
                                desc=f"pretrain {cfg.recipe}", unit="s", dynamic_ncols=True)
            else:
                self.bar = tqdm(total=cfg.total_steps, initial=step, desc=f"pretrain {cfg.recipe}", unit="step",
                                dynamic_ncols=True)

    def show(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(step=record["step"], loss=f"{record['mlm_loss']:.3f}", acc=f"{record['mlm_acc']:.3f}",
                                 tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)

    def advance(self, step: int) -> None:
        if self.bar is None:
            return
        if self.timed:
            self.bar.update(max(0, min(round(self.clock.elapsed()), self.bar.total) - self.bar.n))
        else:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
