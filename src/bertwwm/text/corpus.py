"""Corpus readers: stream documents out of plain text, gzip, JSONL and WikiExtractor files.

Formats (chosen per file):
- plain text (``text``): documents separated by blank lines, each line a paragraph or sentence — the layout of
  Google's create_pretraining_data.py input. With ``doc_per_line=True`` every non-blank line is a document.
- JSONL (files named ``*.jsonl`` / ``*.ndjson``, optionally ``.gz``, or any file whose first line is a JSON
  object with a ``text`` field, such as WikiExtractor's ``--json`` output): one JSON object per line.
- WikiExtractor output (a file whose first non-blank line starts with ``<doc ``): ``<doc ...>`` title line,
  paragraphs, ``</doc>``. The title line is dropped.
- directories: every non-hidden file below them, sorted by path, recursively.

Any of these may be gzip-compressed (``.gz``). Reading is streaming with bounded memory: lines are read in
pieces of at most ``MAX_LINE_BYTES`` and documents are cut after ``MAX_DOCUMENT_CHARS``. Damaged input is
skipped and counted in `CorpusCounts` (which `prepare` puts into the manifest) rather than stopping a long run;
input whose meaning is unclear (a text file with no blank line between documents, stray text between
WikiExtractor documents, malformed JSON) stops with a `UserError` naming the file and line.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from bertwwm.core.errors import UserError

MAX_LINE_BYTES = 1 << 20  # lines longer than 1 MiB are split into pieces (counted)
MAX_DOCUMENT_CHARS = 4_000_000  # longer documents are cut into parts (counted), keeping memory bounded
MAX_JSONL_LINE_BYTES = 256 << 20  # one JSON record cannot be split; beyond this it is an error
JSONL_SUFFIXES = (".jsonl", ".ndjson")
_WIKI_DOC_OPEN = re.compile(rb"^<doc\b[^>]*>\s*$")
_WIKI_DOC_CLOSE = b"</doc>"


@dataclass
class CorpusCounts:
    """What the readers saw and what they had to skip or split. All are counts of the whole input."""

    files: int = 0
    documents: int = 0  # documents yielded
    lines: int = 0  # physical lines read (JSONL: records)
    input_bytes: int = 0  # bytes read from disk (compressed bytes for .gz)
    skipped_invalid_utf8: int = 0  # lines dropped because they are not valid UTF-8
    skipped_nul: int = 0  # lines dropped because they contain NUL bytes (binary data)
    skipped_empty_documents: int = 0  # documents with no text left
    split_long_lines: int = 0  # lines over MAX_LINE_BYTES, cut into pieces
    split_long_documents: int = 0  # documents over MAX_DOCUMENT_CHARS, cut into parts

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Document:
    """One document: its text, paragraphs separated by newlines, and where it started."""

    text: str
    path: str
    line: int


def list_input_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand directories (recursively, sorted, hidden entries skipped); keep files in the given order."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(Path(root) / n for n in names if not n.startswith("."))
            found.sort()
            if not found:
                raise UserError("directory contains no input files", p)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise UserError("input is neither a file nor a directory", p)
        else:
            raise UserError("input not found", p)
    return files


def file_format(path: Path, head: bytes) -> str:
    """'jsonl' by file name or first line, 'wikiextractor' when the first non-blank line opens a <doc>,
    else 'text'."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    lines = head.split(b"\n")
    first = next((ln.strip() for ln in lines if ln.strip()), b"")
    if first.startswith(b"<doc ") or first == b"<doc>":
        return "wikiextractor"
    # WikiExtractor --json writes JSONL into files named wiki_00: recognise it by content
    if first.startswith(b"{") and len(lines) > 1 and _looks_like_jsonl(first):
        return "jsonl"
    return "text"


def read_documents(
    inputs: Iterable[str | Path], *, doc_per_line: bool = False, counts: CorpusCounts | None = None
) -> Iterator[Document]:
    """Stream the documents of all inputs in order. Pass `counts` to collect what was skipped."""
    counts = counts if counts is not None else CorpusCounts()
    for path in list_input_files(inputs):
        counts.files += 1
        yield from _read_file(path, doc_per_line, counts)


def _open_binary(path: Path) -> tuple[BinaryIO, BinaryIO]:
    """(stream of the file's bytes, the raw file whose position measures progress)."""
    raw = open(path, "rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), buffer_size=1 << 20), raw
    return raw, raw


def _read_file(path: Path, doc_per_line: bool, counts: CorpusCounts) -> Iterator[Document]:
    try:
        stream, raw = _open_binary(path)
    except OSError as e:
        raise UserError(f"cannot open ({e.strerror or e})", path) from None
    with raw, stream:
        start_bytes = counts.input_bytes
        try:  # I/O errors and truncated or corrupt gzip data, wherever they surface
            head = stream.peek(8192)[:8192]
            _check_encoding(path, head)
            if head.startswith(UTF8_BOM):
                stream.read(len(UTF8_BOM))  # a UTF-8 byte order mark is not text
                head = head[len(UTF8_BOM):]
            fmt = file_format(path, head)
            if fmt == "text":
                docs = _text_documents(path, stream, raw, doc_per_line, counts, start_bytes)
            elif fmt == "jsonl":
                docs = _jsonl_documents(path, stream, raw, counts, start_bytes)
            else:
                docs = _wiki_documents(path, stream, raw, counts, start_bytes)
            yield from _limit_documents(docs, counts)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"cannot read ({e})", path) from None
        counts.input_bytes = start_bytes + raw.tell()


UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32",
              b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def _check_encoding(path: Path, head: bytes) -> None:
    """UTF-16/32 text would be dropped line by line as "not UTF-8" or NUL-laden; say what it is instead."""
    encoding = next((name for bom, name in _WIDE_BOMS.items() if head.startswith(bom)), None)
    if encoding is None and len(head) >= 64 and not _is_utf8_prefix(head):
        for codec in ("utf-16-le", "utf-16-be"):  # without a BOM: mostly CJK, ASCII and newlines when decoded?
            text = head[:len(head) & ~1].decode(codec, errors="replace")
            plain = sum(1 for ch in text if ch in "\n\r\t" or " " <= ch <= "~" or "\u3000" <= ch <= "\u9fff"
                        or "\uff00" <= ch <= "\uffef")
            if "\n" in text and plain > 0.95 * len(text):
                encoding = codec.upper().replace("-LE", "LE").replace("-BE", "BE") + " (no byte order mark)"
                break
    if encoding is not None:
        raise UserError(f"the file is {encoding}, not UTF-8; convert it first, e.g. "
                        f"`iconv -f {encoding.split()[0]} -t UTF-8 {path.name} > {path.stem}.utf8.txt`", path)


def _is_utf8_prefix(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3 and e.reason == "unexpected end of data"  # cut inside the last character
    return True


def _raw_lines(stream: BinaryIO, limit: int, counts: CorpusCounts) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its newline); lines over `limit` bytes come as several pieces (same number),
    cut between UTF-8 characters."""
    lineno = 0
    carry = b""
    while True:
        piece = stream.readline(limit - len(carry))
        if not piece:
            if carry:
                yield lineno, carry
            return
        piece = carry + piece
        carry = b""
        if piece.endswith(b"\n"):
            lineno += 1
            counts.lines += 1
            yield lineno, piece[:-1]
        elif len(piece) >= limit:
            cut = len(piece)
            # back up to the start of the last character so no character is split in two
            for i in range(len(piece) - 1, max(len(piece) - 5, -1), -1):
                if piece[i] & 0xC0 != 0x80:
                    cut = i
                    break
            cut = cut or len(piece)
            piece, carry = piece[:cut], piece[cut:]
            counts.split_long_lines += 1
            yield lineno + 1, piece
        else:  # last line without a newline
            lineno += 1
            counts.lines += 1
            yield lineno, piece


def _decode(raw: bytes, counts: CorpusCounts) -> str | None:
    """The line as text, or None (counted) when it holds NUL bytes or is not UTF-8."""
    if b"\x00" in raw:
        counts.skipped_nul += 1
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        counts.skipped_invalid_utf8 += 1
        return None
    return text.rstrip("\r")


def _progress(counts: CorpusCounts, start: int, raw: BinaryIO) -> None:
    counts.input_bytes = start + raw.tell()


def _text_documents(path, stream, raw, doc_per_line, counts, start_bytes) -> Iterator[Document]:
    paragraphs: list[str] = []
    doc_line = 0
    saw_blank = False
    bad_lines = good_lines = 0
    first_doc_lines = 0
    doc_had_lines = False  # the current document had lines, even if all were skipped
    doc_chars = 0
    for lineno, raw_line in _raw_lines(stream, MAX_LINE_BYTES, counts):
        if not raw_line.strip():
            saw_blank = True
            if paragraphs or doc_had_lines:
                yield Document("\n".join(paragraphs), str(path), doc_line)  # empty ones are counted later
                paragraphs = []
                doc_had_lines = False
                _progress(counts, start_bytes, raw)
            continue
        text = _decode(raw_line, counts)
        if text is None:
            bad_lines += 1
            doc_had_lines = not doc_per_line
            continue
        good_lines += 1
        text = text.strip()
        if doc_per_line:
            yield Document(text, str(path), lineno)
            if lineno % 4096 == 0:
                _progress(counts, start_bytes, raw)
            continue
        if not paragraphs:
            doc_line = lineno
            doc_chars = 0
        paragraphs.append(text)
        doc_chars += len(text) + 1
        if not saw_blank:
            first_doc_lines = lineno  # physical lines: the pieces of one over-long line count once
            # No blank line yet: either one very long document or one document per line. Refuse to guess;
            # a single (over-long) line so far is one document, handed on in parts below.
            if lineno > 1 and (lineno > 100_000 or doc_chars > MAX_DOCUMENT_CHARS):
                raise _no_blank_line_error(path, lineno)
        if doc_chars > MAX_DOCUMENT_CHARS:  # keep memory bounded: hand on what we have (cut again later)
            yield Document("\n".join(paragraphs), str(path), doc_line)
            paragraphs = []
            counts.split_long_documents += 1
    if not doc_per_line and not saw_blank and first_doc_lines > 1:
        raise _no_blank_line_error(path, first_doc_lines)
    if paragraphs or doc_had_lines:
        yield Document("\n".join(paragraphs), str(path), doc_line)
    if good_lines == 0 and bad_lines:
        raise UserError(f"no readable text: all {bad_lines} lines are binary or not UTF-8", path)


def _no_blank_line_error(path, lineno) -> UserError:
    return UserError(
        f"no blank line separates documents in the first {lineno} lines, so it is unclear where documents end: "
        "put a blank line between documents, or pass --doc-per-line if every line is a document",
        path, lineno)


def _looks_like_jsonl(line: bytes) -> bool:
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and "text" in obj


def _jsonl_documents(path, stream, raw, counts, start_bytes) -> Iterator[Document]:
    for lineno, raw_line in _raw_lines(stream, MAX_JSONL_LINE_BYTES, counts):
        if not raw_line.strip():
            continue
        if len(raw_line) >= MAX_JSONL_LINE_BYTES - 1:
            raise UserError(f"JSON record longer than {MAX_JSONL_LINE_BYTES >> 20} MiB", path, lineno)
        line = _decode(raw_line, counts)
        if line is None:
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"invalid JSON ({e.args[0]})", path, lineno) from None
        if not isinstance(obj, dict) or "text" not in obj:
            raise UserError('expected a JSON object with a "text" field', path, lineno)
        text = obj["text"]
        if not isinstance(text, str):
            raise UserError(f'"text" must be a string, got {type(text).__name__}', path, lineno)
        if "\x00" in text:
            counts.skipped_nul += 1
            text = text.replace("\x00", "")
        yield Document(text, str(path), lineno)
        if lineno % 1024 == 0:
            _progress(counts, start_bytes, raw)


def _wiki_documents(path, stream, raw, counts, start_bytes) -> Iterator[Document]:
    paragraphs: list[str] | None = None  # None: outside a <doc>
    open_line = doc_chars = 0
    title_pending = False
    for lineno, raw_line in _raw_lines(stream, MAX_LINE_BYTES, counts):
        stripped = raw_line.strip()
        if paragraphs is None:
            if not stripped:
                continue
            if _WIKI_DOC_OPEN.match(stripped):
                paragraphs, open_line, title_pending, doc_chars = [], lineno, True, 0
                continue
            raise UserError("text outside a <doc>...</doc> block in a WikiExtractor file", path, lineno)
        if stripped == _WIKI_DOC_CLOSE:
            yield Document("\n".join(paragraphs), str(path), open_line)
            paragraphs = None
            _progress(counts, start_bytes, raw)
            continue
        if _WIKI_DOC_OPEN.match(stripped):
            raise UserError(f"<doc> opened at line {open_line} is not closed before the next <doc>", path, lineno)
        if not stripped:
            continue
        text = _decode(raw_line, counts)
        if text is None:
            continue
        if title_pending:  # WikiExtractor repeats the title as the first line
            title_pending = False
            continue
        paragraphs.append(text.strip())
        doc_chars += len(paragraphs[-1]) + 1
        if doc_chars > MAX_DOCUMENT_CHARS:
            raise UserError(f"<doc> opened at line {open_line} runs over {MAX_DOCUMENT_CHARS:,} characters; "
                            "is its </doc> missing?", path, lineno)
    if paragraphs is not None:
        raise UserError("<doc> is not closed by </doc> before the end of the file", path, open_line)


def _limit_documents(docs: Iterable[Document], counts: CorpusCounts) -> Iterator[Document]:
    """Drop empty documents and cut oversized ones at paragraph (or, failing that, character) boundaries."""
    for doc in docs:
        text = doc.text.strip()
        if not text:
            counts.skipped_empty_documents += 1
            continue
        if len(text) <= MAX_DOCUMENT_CHARS:
            counts.documents += 1
            yield Document(text, doc.path, doc.line) if text is not doc.text else doc
            continue
        counts.split_long_documents += 1
        start = 0
        while start < len(text):
            end = min(start + MAX_DOCUMENT_CHARS, len(text))
            if end < len(text):
                nl = text.rfind("\n", start + MAX_DOCUMENT_CHARS // 2, end)
                end = nl + 1 if nl > 0 else end
            part = text[start:end].strip()
            if part:
                counts.documents += 1
                yield Document(part, doc.path, doc.line)
            start = end
