"""Shared fixtures: the real data in ../shared/data (override with BERTWWM_SHARED_DATA)."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    # Conversions on the fly go to the cache; keep the user's ~/.cache/bertwwm out of the tests.
    monkeypatch.setenv("BERTWWM_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def tiny_tf(shared_data) -> Path:
    """The genuine TensorFlow BERT checkpoint with TF-computed reference outputs."""
    return shared_data / "checkpoints" / "tiny-bert-tf"


@pytest.fixture
def tiny_copy(tiny_tf, tmp_path) -> Path:
    """A writable copy of the checkpoint, for corrupting."""
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_tf, folder)
    for p in folder.iterdir():
        p.chmod(0o644)
    return folder
