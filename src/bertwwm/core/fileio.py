"""Atomic writes: a half-written file or folder never looks complete (write to a temp name, then rename).

A full disk while writing becomes one clear `UserError` ("no space left on DEVICE while writing FILE"):
numpy, torch and safetensors each report it differently (an OSError without errno, a RuntimeError from
torch's zip writer, a SafetensorError), so the free space of the file system decides.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from bertwwm.core.errors import UserError

DISK_FULL_FREE_BYTES = 1 << 20  # a write that failed with less than this left is blamed on a full disk


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path` (file or folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(target, path)
        _fsync_dir(path.parent)
    except Exception as e:
        full = disk_full_error(e, path)  # decided before the temporary is removed (which frees space)
        if full is not None:
            raise full from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def mount_point(path: str | Path) -> Path:
    """The folder a file system is mounted on, for messages: the highest ancestor on the same device."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        dev = path.stat().st_dev
        while path != path.parent and path.parent.stat().st_dev == dev:
            path = path.parent
    except OSError:
        pass
    return path


def free_bytes(path: str | Path) -> int | None:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def disk_full_error(exc: BaseException, path: str | Path) -> UserError | None:
    """A UserError when `exc`, raised while writing `path`, comes from a full disk (or quota); else None."""
    if isinstance(exc, UserError):
        return None
    code = getattr(exc, "errno", None)
    full = code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(exc)
    # Only errors that carry no errno of their own (numpy's short write, torch's zip writer, safetensors)
    # are judged by the free space; a PermissionError on a nearly full disk stays a PermissionError.
    if not full and code is None and (isinstance(exc, (OSError, RuntimeError))
                                      or type(exc).__name__ == "SafetensorError"):
        free = free_bytes(path)
        full = full or (free is not None and free < DISK_FULL_FREE_BYTES)
    if not full:
        return None
    target = getattr(exc, "filename", None) or path
    return UserError(f"no space left on {mount_point(path)} while writing {target}")

