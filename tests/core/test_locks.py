"""Run-folder locks: one writer at a time, the holder named, released by the kernel when the holder dies."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from bertwwm.core.errors import UserError
from bertwwm.core.locks import LOCK_FILE, FolderLock

HOLDER = """
import sys
from bertwwm.core.locks import FolderLock
FolderLock(sys.argv[1], what="this run folder").acquire()
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the test closes stdin or kills us
"""


def test_a_second_process_is_refused_with_the_holders_pid_and_host(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as e:
            FolderLock(tmp_path / "run", what="this run folder").acquire()
        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
        assert e.value.path == str(tmp_path / "run")
    finally:
        holder.kill()  # kill -9: no cleanup code runs, the kernel drops the lock
        holder.wait()
    with FolderLock(tmp_path / "run"):  # a stale lock file does not block anyone
        assert (tmp_path / "run" / LOCK_FILE).is_file()


def test_the_lock_is_exclusive_within_one_process_too_and_released_on_exit(tmp_path):
    first = FolderLock(tmp_path).acquire()
    with pytest.raises(UserError, match="being written by another process"):
        FolderLock(tmp_path).acquire()
    first.release()
    with FolderLock(tmp_path):
        pass
    with FolderLock(tmp_path):  # released again by the context manager
        pass
