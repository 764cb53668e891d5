"""Reference helpers for the tests: plain-Python versions of what the package does vectorised."""

from __future__ import annotations

import numpy as np

from bertwwm.text.tokens import VocabInfo

SPECIAL = set(VocabInfo.from_vocab().special_ids.tolist())


def word_groups(ids: np.ndarray, word_starts: np.ndarray) -> list[list[int]]:
    """Positions of each maskable word (special tokens are words of their own and never maskable)."""
    out, current = [], None
    for i, (token, start) in enumerate(zip(ids.tolist(), word_starts.tolist())):
        if token in SPECIAL:
            current = None
            continue
        if start or current is None:
            current = []
            out.append(current)
        current.append(i)
    return out


def one_clear_line(err: str, verb: str, *needles: str) -> str:
    """The CLI's promise for bad input: exactly one `bertwwm VERB: error:` line, no traceback, naming `needles`."""
    lines = [line for line in err.strip().splitlines() if line.startswith(f"bertwwm {verb}: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
