"""Faults around `bertwwm pretrain`: damaged and malicious checkpoints, resume on other data, a finished run
resumed, a locked run folder, stale temporaries, a full disk. Each ends in exit 0 with the right result, or
exit 2 with one line naming the file, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.core.locks import FolderLock

STEPS = 12  # checkpoints at 4 and 8, final at 12


@pytest.fixture(scope="module")
def data(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Two small prepared folders from different text (same options)."""
    from bertwwm.data.prepare import prepare

    root = tmp_path_factory.mktemp("reliability-data")
    lines = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()
    out = {}
    for name, part in (("a", lines[:600]), ("b", lines[600:1200])):
        text = root / f"{name}.txt"
        text.write_text("\n".join(part) + "\n", encoding="utf-8")
        out[name] = root / f"prepared-{name}"
        prepare([text], out[name], max_seq_length=32, dynamic=True, nsp=True, progress=False)
    return out


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--recipe", "tiny-cpu", "--data", str(data), "--out", str(out), "--max-steps", str(STEPS),
            "--batch-size", "4", "--save-every", "4", "--keep-last", "3", "--eval-every", "100", "--threads", "1",
            "--no-progress", "--set", "train.eval_instances=0", *extra]


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished run with checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(_args(data["a"], run)) == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-00000004", "step-00000008"]
    return run


def _unfinished_copy(finished: Path, tmp_path: Path) -> Path:
    """The run as if killed after its step-8 checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "final")
    return run


def _one_clear_line(err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.startswith("bertwwm pretrain: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_checkpoints_hold_only_what_the_weights_only_loader_accepts(finished):
    ckpt = finished / "checkpoints" / "step-00000008"
    state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
    rank = torch.load(ckpt / "rank-0.pt", weights_only=True)
    assert state["step"] == 8 and len(state["data"]) == 1
    assert {"python", "numpy", "torch"} <= set(rank["rng"])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate-weights", "truncate-trainer-state", "garbage-rank-state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(finished, data, tmp_path, capsys, damage):
    run = _unfinished_copy(finished, tmp_path)
    latest = run / "checkpoints" / "step-00000008"
    if damage == "truncate-weights":
        path = latest / "model.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "truncate-trainer-state":
        path = latest / "trainer_state.pt"
        path.write_bytes(path.read_bytes()[:100])
    else:
        (latest / "rank-0.pt").write_bytes(b"\x80\x04garbage, not a pickle")
    assert main(_args(data["a"], run, "--resume")) == 0
    err = capsys.readouterr().err
    assert "step-00000008 is damaged" in err and "resuming from step-00000004" in err
    # resumed from step 4, the run ends exactly where the uninterrupted one did
    a, b = load_file(str(finished / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_readable_checkpoint_is_one_clear_error(finished, data, tmp_path, capsys):
    run = _unfinished_copy(finished, tmp_path)
    for ckpt in (run / "checkpoints").glob("step-*"):
        (ckpt / "trainer_state.pt").write_bytes(b"")
    assert main(_args(data["a"], run, "--resume")) == 2
    _one_clear_line(capsys.readouterr().err, "no checkpoint of this run can be read")
    assert not (run / "final").exists()


def test_a_malicious_pickle_in_a_checkpoint_is_never_run(finished, data, tmp_path, capsys):
    run = _unfinished_copy(finished, tmp_path)
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for ckpt in (run / "checkpoints").glob("step-*"):
        torch.save({"step": 8, "payload": Payload()}, ckpt / "trainer_state.pt")
    assert main(_args(data["a"], run, "--resume")) == 2
    err = capsys.readouterr().err
    _one_clear_line(err, "trainer_state.pt", "never runs code")
    assert not marker.exists()
    assert "weights_only" not in err


def test_resume_refuses_other_data_and_accepts_a_copy_of_the_same(finished, data, tmp_path, capsys):
    run = _unfinished_copy(finished, tmp_path)
    assert main(_args(data["b"], run, "--resume")) == 2
    _one_clear_line(capsys.readouterr().err, "other data than the checkpoint", str(data["b"]))
    assert json.loads((run / "run_config.json").read_text())["data"] == str(data["a"])  # not overwritten
    copy = tmp_path / "moved-data"
    shutil.copytree(data["a"], copy)
    assert main(_args(copy, run, "--resume")) == 0
    a, b = load_file(str(finished / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_a_finished_run_does_not_train_again(finished, data, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = (run / "final" / "model.safetensors").stat().st_mtime_ns
    assert main(_args(data["a"], run, "--resume")) == 0
    assert f"already finished at step {STEPS}" in capsys.readouterr().err
    assert (run / "final" / "model.safetensors").stat().st_mtime_ns == before
    longer = _args(data["a"], run, "--resume")
    longer[longer.index("--max-steps") + 1] = str(2 * STEPS)
    assert main(longer) == 2
    _one_clear_line(capsys.readouterr().err, f"already finished at step {STEPS}", "--init")
    assert (run / "final" / "model.safetensors").stat().st_mtime_ns == before


def test_stale_temporaries_are_removed_on_resume(finished, data, tmp_path):
    run = _unfinished_copy(finished, tmp_path)
    stale = run / "checkpoints" / ".step-00000012.abc123.tmp"
    (stale / "step-00000012").mkdir(parents=True)
    (stale / "step-00000012" / "model.safetensors").write_bytes(b"\0" * 1000)
    (run / "checkpoints" / ".ranks").mkdir(exist_ok=True)
    (run / "checkpoints" / ".ranks" / "step-00000012-rank-0.pt").write_bytes(b"half")
    assert main(_args(data["a"], run, "--resume")) == 0
    assert not stale.exists() and not (run / "checkpoints" / ".ranks" / "step-00000012-rank-0.pt").exists()


def test_a_second_writer_of_a_run_folder_is_refused(data, tmp_path, capsys):
    run = tmp_path / "run"
    with FolderLock(run, what="this run folder"):  # another writer holds the folder
        assert main(_args(data["a"], run)) == 2
    _one_clear_line(capsys.readouterr().err, f"pid {os.getpid()}", f"host {socket.gethostname()}")
    assert not (run / "checkpoints").exists() and not (run / "run_config.json").exists()


def test_a_full_disk_while_checkpointing_is_one_clear_error(data, tmp_path, capsys, monkeypatch):
    def full_disk(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    assert main(_args(data["a"], run)) == 2
    _one_clear_line(capsys.readouterr().err, "no space left on", "while writing", "step-00000004")
    assert not (run / "final").exists()
    assert not list((run / "checkpoints").glob("step-*"))  # nothing half-written looks like a checkpoint
