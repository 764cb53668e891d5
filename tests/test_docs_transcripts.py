"""Every transcript in docs/ is the real output of its command.

A transcript is a ```console block right after a line `<!-- transcript -->`. In it, a line `$ bertwwm ...`
is a command and the lines after it, up to the next `$ ` line, are what it prints (stdout and stderr
together, trailing spaces ignored). Only fast, deterministic commands are marked (show-masking with
--seed, models, errors). They run in an empty folder, offline, with empty caches, so a model that is not
there reads the same everywhere.

After changing what a command prints, regenerate the blocks from the real output:

    .venv/bin/python tests/test_docs_transcripts.py --update
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKER = "<!-- transcript -->"
_BLOCK = re.compile(r"^" + re.escape(MARKER) + r"[ \t]*\n```console\n(.*?)^```[ \t]*$", re.M | re.S)


def transcripts(text: str) -> list[re.Match]:
    return list(_BLOCK.finditer(text))


def commands(body: str) -> list[tuple[str, str]]:
    """[(command line, expected output)] of one block."""
    out: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line.rstrip())
        elif line.strip():
            raise ValueError(f"output before the first command in a transcript: {line!r}")
    return [(cmd, "\n".join(lines).rstrip("\n")) for cmd, lines in out]


def run_command(command: str, workdir: Path) -> str:
    argv = shlex.split(command)
    if not argv or argv[0] != "bertwwm":
        raise ValueError(f"a transcript command must start with `bertwwm`: {command!r}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(workdir / ".hf-cache"),
           "BERTWWM_CACHE": str(workdir / ".bertwwm-cache"), "COLUMNS": "100", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, "-m", "bertwwm", *argv[1:]], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            timeout=120)
    return "\n".join(line.rstrip() for line in result.stdout.splitlines()).rstrip("\n")


def _cases() -> list:
    cases = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for block in transcripts(text):
            line = text[:block.start()].count("\n") + 1
            for command, expected in commands(block.group(1)):
                cases.append(pytest.param(command, expected, id=f"{page.relative_to(DOCS)}:{line}:{command[:40]}"))
    return cases


def test_docs_have_transcripts():
    assert len(_cases()) >= 3  # the marker is in use (a typo in it would silently test nothing)


@pytest.mark.parametrize("command, expected", _cases())
def test_transcript_matches_the_real_output(command, expected, tmp_path):
    assert run_command(command, tmp_path) == expected


def update(workdir: Path) -> None:
    """Rewrite every transcript's output from the commands' real output."""
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        blocks = transcripts(text)
        for block in reversed(blocks):
            body = "".join(f"$ {command}\n" + (run_command(command, workdir) + "\n").lstrip("\n")
                           for command, _ in commands(block.group(1)))
            text = text[:block.start(1)] + body + text[block.end(1):]
        if blocks:
            page.write_text(text, encoding="utf-8")
            print(f"updated {len(blocks)} transcript(s) in {page}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit(__doc__)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        update(Path(tmp))
