"""A run folder is written by one process at a time: `fcntl.flock` on a lock file holding the writer's pid and host.

The kernel releases the lock when the process ends, however it ends (``kill -9`` included), so a stale lock
file never blocks anyone: only a live holder does. The lock file stays in the folder (removing it would
let two processes lock two different files of the same name).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from bertwwm.core.errors import UserError

LOCK_FILE = ".bertwwm.lock"


class FolderLock:
    """An exclusive lock on `folder` (created if needed); `acquire()` raises UserError naming the holder."""

    def __init__(self, folder: str | Path, name: str = LOCK_FILE, what: str = "folder"):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fd: int | None = None

    def acquire(self, wait_s: float = 0.0) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise UserError(f"{self.what} is being written by another process ({holder}); wait for it "
                                    "to finish, or choose another --out", self.folder) from None
                time.sleep(0.1)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "command": " ".join(sys.argv[:1] + sys.argv[1:8])}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    pid, host = info.get("pid", "?"), info.get("host", "?")
    since = f", since {info['started']}" if info.get("started") else ""
    return f"pid {pid} on host {host}{since}"


@contextlib.contextmanager
def locked(folder: str | Path, what: str = "folder", name: str = LOCK_FILE, wait_s: float = 0.0) -> Iterator[None]:
    lock = FolderLock(folder, name, what).acquire(wait_s)
    try:
        yield
    finally:
        lock.release()
