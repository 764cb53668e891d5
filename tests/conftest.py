"""Shared fixtures: the real data in ../shared/data (override with BERTWWM_SHARED_DATA)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BERTWWM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA} (set BERTWWM_SHARED_DATA)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def resources() -> Path:
    """The data shipped in the package (src/bertwwm/resources: vocab, a law-text sample, ChnSentiCorp and
    CMRC 2018 slices in their original formats): enough for tests that need only a little real data."""
    from importlib.resources import files

    return Path(str(files("bertwwm") / "resources"))


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores, two xdist workers: one intra-op thread each keeps tests from oversubscribing. Session
    # scope, so that module- and session-scoped fixtures (which train models too) run under it as well.
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # for the subprocesses tests start
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
    if before is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = before


@pytest.fixture(autouse=True)
def _one_thread_again():
    # A test may have run code that sets its own thread count (pretrain --threads); the next starts at one.
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


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
