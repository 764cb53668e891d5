"""User-facing errors. The CLI prints them as one line and exits with status 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

EXIT_USAGE = 2


class UserError(Exception):
    """Bad input or configuration the user can fix. `path`/`line` say where, when known."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line

    def __reduce__(self):
        # Keep path/line when the error crosses a process boundary (prepare's worker pool pickles it).
        return (UserError, (self.message, self.path, self.line))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        return where + self.message
