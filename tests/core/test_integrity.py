"""Model and checkpoint files read without trusting them: damage is a UserError naming the file, and a
pickle that would run code is refused without the advice to load it unsafely."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from bertwwm.core.errors import UserError
from bertwwm.core.integrity import check_safetensors, load_safetensors, load_torch_file


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.arange(100, dtype=torch.float32), "b": torch.ones(3, 4)}, str(path))
    return path


def test_a_whole_safetensors_file_passes(weights):
    check_safetensors(weights)
    assert torch.equal(load_safetensors(weights)["a"], torch.arange(100, dtype=torch.float32))


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"extra", "longer than its header says"),
    (lambda b: b[:5], "shorter than its 8-byte header length"),
    (lambda b: struct.pack("<Q", 10**12) + b[8:], "bad header length"),
    (lambda b: b[:8] + b"{not json" + b[17:], "not valid JSON"),
])
def test_damaged_safetensors_files_are_named(weights, damage, message):
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(UserError, match=message) as e:
        load_safetensors(weights)
    assert e.value.path == str(weights)


def test_torch_files_load_weights_only(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"step": 3, "rng": (3, tuple(range(5)), None), "t": torch.ones(2)}, path)
    state = load_torch_file(path)
    assert state["step"] == 3 and torch.equal(state["t"], torch.ones(2))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "state.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(UserError) as e:
        load_torch_file(path, "checkpoint")
    assert "never runs code" in str(e.value) and "system" in str(e.value)
    assert "weights_only" not in str(e.value) and not marker.exists()


@pytest.mark.parametrize("content", [b"", b"plain text\n", json.dumps({"a": 1}).encode(),
                                     bytes((i * 37 + 11) % 256 for i in range(64))])
def test_garbage_is_a_user_error(tmp_path, content):
    path = tmp_path / "rank-0.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match="cannot read") as e:
        load_torch_file(path, "checkpoint rank state")
    assert e.value.path == str(path)
