"""The wall-time clock of a run (`--time-budget`): continued across resumes, agreed on by every rank."""

from __future__ import annotations

import time

from bertwwm.pretrain.distributed import Dist, broadcast_float

_now = time.monotonic  # the run's clock (tests replace it with a deterministic one)


class Clock:
    """Wall time of a run, continued across resumes; under torchrun every rank follows rank 0's clock, so
    all ranks change phase and stop at the same step."""

    def __init__(self, budget: float | None, elapsed_before: float, d: Dist):
        self.budget, self.before, self.d = budget, elapsed_before, d
        self.start = _now()
        self._last = elapsed_before

    def elapsed(self) -> float:
        """Seconds so far: as of the last tick under a budget (what every rank agreed on), else now."""
        return self._last if self.budget is not None else self.before + (_now() - self.start)

    def tick(self) -> float:
        value = self.before + (_now() - self.start)
        if self.budget is not None and self.d.world > 1:
            value = broadcast_float(value, self.d)
        self._last = value
        return value

    def fraction(self) -> float:
        return self.tick() / self.budget

    def spent(self) -> bool:
        return self.tick() >= self.budget
