"""Shared fixtures: the real data in ../shared/data (override with BERTWWM_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERTWWM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (set BERTWWM_SHARED_DATA)"
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # Two cores, two xdist workers: one intra-op thread each keeps tests from oversubscribing.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
