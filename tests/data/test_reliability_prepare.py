"""Faults around `bertwwm prepare` and prepared folders: two writers, killed parents, full disks, text in
the wrong encoding, over-long lines, shards changed after preparation, token ids outside the vocabulary.
Each ends in exit 0 with the right result, or exit 2 with one line naming the file, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertwwm.core import fileio
from bertwwm.data import storage
from bertwwm.cli import main
from reference import one_clear_line as _one_clear_line
from bertwwm.core.errors import UserError
from bertwwm.core.locks import FolderLock
from bertwwm.data.storage import FORMAT_VERSION, PreparedDataset, data_fingerprint, read_manifest, write_shard


@pytest.fixture(scope="module")
def text(shared_data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "clue.txt"
    lines = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()[:400]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _prepare(*args: str) -> int:
    return main(["prepare", "--quiet", "--max-seq-length", "32", "--dynamic", *args])


# ---------------------------------------------------------------------------------------- locks, workers


def test_a_second_writer_of_a_prepare_folder_is_refused(text, tmp_path, capsys):
    out = tmp_path / "out"
    with FolderLock(out, what="this prepared-data folder"):  # another `prepare` is writing it
        assert _prepare(str(text), "--out", str(out)) == 2
    _one_clear_line(capsys.readouterr().err, "prepare", str(out), f"pid {os.getpid()}",
                    f"host {socket.gethostname()}")
    assert not list(out.glob("manifest*")) and not list(out.glob("shard-*"))
    assert _prepare(str(text), "--out", str(out)) == 0  # released: the folder is usable
    assert read_manifest(out)["complete"]


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(shared_data, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bertwwm", "prepare", str(shared_data / "corpus" / "clue-small-sample.txt"),
           "--out", str(out), "--quiet", "--workers", "2", "--shard-chars", "5000", "--dupe-factor", "3"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while len(workers) < 2:
        assert parent.poll() is None and time.monotonic() < deadline, "prepare ended before its workers started"
        workers = _children(parent.pid)
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers {workers} outlived their parent"
        time.sleep(0.05)
    assert not read_manifest(out, require_complete=False)["complete"]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited; it only waits to be reaped by init


# ---------------------------------------------------------------------------------------------- full disk


def test_a_full_disk_is_one_clear_error_and_nothing_looks_finished(text, tmp_path, capsys, monkeypatch):
    def full_disk(file, array, allow_pickle=True):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    out = tmp_path / "out"
    assert _prepare(str(text), "--out", str(out)) == 2
    _one_clear_line(capsys.readouterr().err, "prepare", "no space left on", "while writing", "shard-00000")
    assert not read_manifest(out, require_complete=False)["complete"]
    assert not list(out.glob("shard-*")) and not list(out.glob(".shard-*"))


def test_numpys_short_write_counts_as_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    # numpy reports a short write as OSError("Not enough free space ...") with no errno: free space decides
    short_write = OSError("Not enough free space to write 4000 bytes after offset 128")
    monkeypatch.setattr(fileio, "free_bytes", lambda path: 4096)
    error = fileio.disk_full_error(short_write, tmp_path / "x.npy")
    assert error is not None and str(error) == f"no space left on {fileio.mount_point(tmp_path)} while writing " \
                                               f"{tmp_path / 'x.npy'}"
    monkeypatch.setattr(fileio, "free_bytes", lambda path: 10 << 30)
    assert fileio.disk_full_error(short_write, tmp_path / "x.npy") is None
    assert fileio.disk_full_error(ValueError("bad value"), tmp_path / "x.npy") is None


# ---------------------------------------------------------------------------------------------- the text


def test_utf16_text_is_named_as_such(text, tmp_path, capsys):
    content = text.read_text(encoding="utf-8")[:3000]
    for name, data in (("bom.txt", content.encode("utf-16")), ("le.txt", content.encode("utf-16-le")),
                       ("be.txt", content.encode("utf-16-be"))):
        (tmp_path / name).write_bytes(data)
        assert _prepare(str(tmp_path / name), "--out", str(tmp_path / f"out-{name}")) == 2
        _one_clear_line(capsys.readouterr().err, "prepare", str(tmp_path / name), "UTF-16", "not UTF-8", "iconv")


def test_a_utf8_byte_order_mark_is_not_text(text, tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + text.read_bytes())
    plain, marked = (_prepare(str(p), "--out", str(tmp_path / p.stem)) for p in (text, bom))
    assert plain == marked == 0
    a, b = (json.loads((tmp_path / p.stem / "manifest.json").read_text()) for p in (text, bom))
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_one_very_long_line_is_one_document_split_into_pieces(text, tmp_path, capsys, monkeypatch):
    # The limits scaled down 16-fold (1 MiB lines, 4M-character documents) so the test stays fast.
    from bertwwm.text import corpus

    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 64 << 10)
    monkeypatch.setattr(corpus, "MAX_DOCUMENT_CHARS", 250_000 // 3)
    line = text.read_text(encoding="utf-8").replace("\n", "")
    path = tmp_path / "one-line.txt"
    path.write_text(line * (300_000 // len(line.encode()) + 1) + "\n", encoding="utf-8")  # ~300 kB, one line
    assert path.read_text(encoding="utf-8").count("\n") == 1
    assert _prepare(str(path), "--out", str(tmp_path / "out")) == 0
    counts = read_manifest(tmp_path / "out")["counts"]
    assert counts["split_long_lines"] >= 4 and counts["split_long_documents"] >= 1 and counts["instances"] > 0
    two_lines = tmp_path / "two-lines.txt"
    two_lines.write_text(line * 3 + "\n" + line * 3 + "\n", encoding="utf-8")
    assert _prepare(str(two_lines), "--out", str(tmp_path / "out2")) == 2
    _one_clear_line(capsys.readouterr().err, "prepare", f"{two_lines}:2:", "no blank line")


# ------------------------------------------------------------------------------------- prepared folders

def _arrays() -> dict[str, np.ndarray]:
    ids = [101, 2769, 4263, 1266, 776, 102, 1921, 2128, 7305, 102, 101, 872, 1962, 102, 1086, 6224, 102]
    return {"input_ids": np.array(ids), "word_starts": np.ones(len(ids)), "offsets": np.array([0, 10, 17]),
            "segment_b_start": np.array([6, 4]), "nsp_labels": np.array([0, 1])}


def _folder(path: Path, arrays: dict | None = None) -> Path:
    entry = write_shard(path, 0, arrays or _arrays(), {"index": 0})
    manifest = {"format_version": FORMAT_VERSION, "complete": True, "config": {"seed": 1, "inputs": [str(path)]},
                "masking": "dynamic", "nsp": True, "max_seq_length": 16, "dupe_factor": 1, "shards": [entry],
                "counts": {"instances": 2}}
    storage.write_manifest(path, manifest)
    return path


def test_changed_shard_bytes_are_found_before_training(tmp_path, capsys):
    folder = _folder(tmp_path / "data")
    assert len(PreparedDataset(folder)) == 2  # first use: hashed, and recorded as verified
    assert (folder / storage.VERIFIED).is_file()
    ids = folder / "shard-00000" / "input_ids.npy"
    original = ids.read_bytes()
    changed = original[:-2] + b"\x01\x00"  # same size, another token
    ids.write_bytes(changed)
    with pytest.raises(UserError, match="does not match the sha256") as e:
        PreparedDataset(folder)
    assert e.value.path == str(ids)
    assert main(["inspect", str(folder)]) == 2
    _one_clear_line(capsys.readouterr().err, "inspect", str(ids), "sha256")
    ids.write_bytes(original)
    assert len(PreparedDataset(folder)) == 2  # hashed again (its mtime changed) and good
    # bytes changed behind the recorded size and mtime: by design only --verify looks again
    stat = os.stat(ids)
    ids.write_bytes(changed)
    os.utime(ids, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(PreparedDataset(folder)) == 2
    assert main(["inspect", str(folder), "--verify"]) == 2
    _one_clear_line(capsys.readouterr().err, "inspect", str(ids), "sha256")


def test_truncated_and_missing_shard_files_are_named(tmp_path):
    folder = _folder(tmp_path / "data")
    offsets = folder / "shard-00000" / "offsets.npy"
    offsets.write_bytes(offsets.read_bytes()[:-8])
    with pytest.raises(UserError, match="bytes, the manifest says") as e:
        PreparedDataset(folder, verify=False)
    assert e.value.path == str(offsets)
    offsets.unlink()
    with pytest.raises(UserError, match="missing"):
        PreparedDataset(folder, verify=False)


def test_token_ids_outside_the_vocabulary_name_the_shard(tmp_path, capsys):
    arrays = _arrays()
    arrays["input_ids"][3] = 30000  # fits uint16, not the 21,128-entry vocabulary
    folder = _folder(tmp_path / "data", arrays)
    with pytest.raises(UserError, match="token id 30000 is outside the 21,128-entry vocabulary"):
        PreparedDataset(folder)  # found while verifying
    ds = PreparedDataset(folder, verify=False)
    with pytest.raises(UserError, match="outside the 21,128-entry vocabulary") as e:
        ds[0]  # and per instance when verification was skipped
    assert e.value.path.endswith("shard-00000/input_ids.npy")
    assert ds[1]["input_ids"].max() < 21128
    assert main(["inspect", str(folder)]) == 2
    _one_clear_line(capsys.readouterr().err, "inspect", "input_ids.npy", "vocabulary")


def test_the_data_fingerprint_follows_content_not_path(text, tmp_path):
    assert _prepare(str(text), "--out", str(tmp_path / "a")) == 0
    shutil.copytree(tmp_path / "a", tmp_path / "copy")
    assert _prepare(str(text), "--out", str(tmp_path / "b"), "--seed", "7") == 0
    a, copy, b = (data_fingerprint(read_manifest(tmp_path / n)) for n in ("a", "copy", "b"))
    assert a == copy != b
