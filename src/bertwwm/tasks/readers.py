"""Readers for the eight benchmarks in their original file formats, and writers for the same formats.

Every reader returns plain dataclasses; a malformed row raises UserError naming the file and the line.
Formats (see ../shared/data/README.md): TSV with or without a header, CSV with a UTF-8 BOM, SQuAD v1 JSON
(CMRC 2018, DRCD), the CJRC JSON (YES / NO / unanswerable answers, civil and criminal domains) and
THUCNews `title\\tlabel-index` (the ten classes are built in; --classes FILE names others).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from bertwwm.core.errors import UserError
from bertwwm.core.fileio import atomic_write_json, atomic_write_text

# CJRC answer kinds. The CAIL 2019 scorer decides a question's kind from its FIRST gold answer text.
SPAN, YES, NO, UNKNOWN = "span", "YES", "NO", "unknown"
ANSWER_KINDS = (SPAN, YES, NO, UNKNOWN)


@dataclass
class TextExample:
    """One classification example: a sentence or a sentence pair, label as text (None when unlabeled)."""

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | None = None


@dataclass
class Answer:
    text: str
    start: int  # character offset into the context; -1 for YES / NO / unanswerable


@dataclass
class MrcExample:
    """One reading-comprehension question with its context (SQuAD layout)."""

    qid: str
    question: str
    context: str
    context_id: str
    answers: list[Answer] = field(default_factory=list)
    kind: str = SPAN  # span | YES | NO | unknown (CJRC only)
    domain: str | None = None  # civil | criminal (CJRC only)
    title: str | None = None
    article: str | None = None  # index of its data[] record in the file (for stratified samples)


# ---------------------------------------------------------------------------------------------- text


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError("file not found", path) from None
    except IsADirectoryError:
        raise UserError("expected a file, got a folder", path) from None
    try:
        return data.decode("utf-8-sig")  # tolerate a BOM on any text format (bq_corpus has one)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"not UTF-8 ({e.reason})", path, line) from None


def read_table(path: str | Path, fields: Sequence[str], labels: Sequence[str] | None = None,
               require_label: bool = True) -> list[TextExample]:
    """Read a TSV (.tsv/.txt) or CSV (.csv) table of examples.

    `fields` is the column order of a header-less file, e.g. ("text_a", "text_b", "label"). When the first
    row names the columns (any order; "sentence1"/"sentence2" read as text_a/text_b), the header decides.
    TSV is split on tabs only, no quoting, as Google's run_classifier reads it. With `labels` given, a
    label outside it is an error. A file without a label column is accepted when `require_label` is False
    (new data for `bertwwm predict`).
    """
    path = Path(path)
    text = _read_text(path)
    _refuse_json(text, path)
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(text.splitlines()))
    else:
        rows = [line.split("\t") for line in text.split("\n")]
        rows = [[c.rstrip("\r") for c in r] for r in rows]
    aliases = {"sentence1": "text_a", "sentence2": "text_b", "sentence": "text_a", "text": "text_a",
               "query1": "text_a", "query2": "text_b", "title": "text_a"}
    start = 0
    columns = list(fields)
    known = {"text_a", "text_b", "label", "index", "qid", "id"}
    if rows and rows[0] and all(aliases.get(c.strip().lower(), c.strip().lower()) in known for c in rows[0]):
        columns = [aliases.get(c.strip().lower(), c.strip().lower()) for c in rows[0]]
        start = 1
        if "text_a" not in columns:
            raise UserError(f"header {rows[0]} has no text column", path, 1)
    elif not require_label and rows and len(rows[0]) == len(fields) - 1 and "label" in fields:
        columns = [f for f in fields if f != "label"]  # new data without the label column
    examples: list[TextExample] = []
    for i in range(start, len(rows)):
        row = rows[i]
        if row == [] or row == [""]:
            continue  # blank lines (the trailing newline) carry nothing
        if len(row) != len(columns):
            raise UserError(f"expected {len(columns)} columns ({', '.join(columns)}), got {len(row)}", path, i + 1)
        rec = dict(zip(columns, row))
        label = rec.get("label")
        if label is not None:
            label = label.strip()
            if labels is not None and label not in labels:
                raise UserError(f"unknown label {label!r} (expected one of {', '.join(labels)})", path, i + 1)
        elif require_label:
            raise UserError("no label column", path, i + 1)
        if not rec["text_a"].strip():
            raise UserError("empty text", path, i + 1)
        examples.append(TextExample(guid=f"{path.name}-{i + 1}", text_a=rec["text_a"],
                                    text_b=rec.get("text_b"), label=label))
    if not examples:
        raise UserError("no examples in file", path)
    return examples


# THUCNews' ten classes in the order of the official class.txt: a file's label index i means THUCNEWS_CLASSES[i].
THUCNEWS_CLASSES = ("finance", "realty", "stocks", "education", "science", "society", "politics", "sports",
                    "game", "entertainment")


def read_class_file(path: str | Path) -> tuple[str, ...]:
    """A THUCNews class.txt: one class name per line, line i naming label index i."""
    path = Path(path)
    names = tuple(c.strip() for c in _read_text(path).split("\n") if c.strip())
    if not names:
        raise UserError("no class names", path)
    if len(set(names)) != len(names):
        raise UserError("a class name is listed twice", path)
    return names


def read_thucnews(path: str | Path, classes: Sequence[str] | None = None,
                  require_label: bool = True) -> list[TextExample]:
    """THUCNews `title\tlabel-index` lines, at any path: no class.txt is needed beside the file.

    `classes` names the label indexes (default: the ten official classes). A class.txt that does sit beside
    the file is checked against them, so a file indexing other classes is not silently mis-read.
    """
    path = Path(path)
    explicit = classes is not None
    names = tuple(classes) if explicit else THUCNEWS_CLASSES
    sibling = path.parent / "class.txt"
    if not explicit and sibling.is_file() and sibling != path and read_class_file(sibling) != names:
        raise UserError(f"the class.txt beside this file lists other classes than the official ten "
                        f"({', '.join(names)}); pass --classes {sibling} to use it", path)
    examples = []
    text = _read_text(path)
    _refuse_json(text, path)
    for i, line in enumerate(text.split("\n")):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) == 1 and not require_label:
            examples.append(TextExample(guid=f"{path.name}-{i + 1}", text_a=parts[0]))
            continue
        if len(parts) != 2:
            raise UserError(f"expected 'title<TAB>label', got {len(parts)} columns", path, i + 1)
        title, idx = parts
        if not idx.strip().isdigit() or int(idx) >= len(names):
            raise UserError(f"label {idx!r} is not a class index (0..{len(names) - 1}: {', '.join(names)})",
                            path, i + 1)
        examples.append(TextExample(guid=f"{path.name}-{i + 1}", text_a=title, label=names[int(idx)]))
    if not examples:
        raise UserError("no examples in file", path)
    return examples


def write_thucnews(path: str | Path, examples: Sequence[TextExample], class_names: Sequence[str]) -> None:
    """Write `title<TAB>label index` lines and the class.txt they index into (what read_thucnews reads)."""
    path = Path(path)
    index = {name: i for i, name in enumerate(class_names)}
    lines = []
    for e in examples:
        if "\t" in e.text_a or "\n" in e.text_a:
            raise UserError(f"example {e.guid} contains a tab or newline and cannot be written", path)
        lines.append(f"{e.text_a}\t{index[e.label]}" if e.label is not None else e.text_a)
    atomic_write_text(path.parent / "class.txt", "".join(n + "\n" for n in class_names))
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_table(path: str | Path, examples: Sequence[TextExample]) -> None:
    """Write examples as a TSV with a header (what read_table reads back)."""
    pair = any(e.text_b is not None for e in examples)
    cols = ["text_a", "text_b", "label"] if pair else ["text_a", "label"]
    lines = ["\t".join(cols)]
    for e in examples:
        vals = [e.text_a, e.text_b or "", e.label or ""] if pair else [e.text_a, e.label or ""]
        if any("\t" in v or "\n" in v for v in vals):
            raise UserError(f"example {e.guid} contains a tab or newline and cannot be written as TSV", path)
        lines.append("\t".join(vals))
    atomic_write_text(path, "\n".join(lines) + "\n")


# ----------------------------------------------------------------------------------------------- MRC


def _load_json(path: Path) -> dict:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg})", path, e.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UserError('expected a SQuAD-style JSON object with a "data" list', path)
    return data


def _line_of(text_cache: dict, path: Path, needle: str) -> int | None:
    """Best-effort line number of a JSON key/value, for error messages on nested records."""
    if "lines" not in text_cache:
        text_cache["lines"] = _read_text(path).split("\n")
    for i, line in enumerate(text_cache["lines"]):
        if needle in line:
            return i + 1
    return None


def _fix_start(context: str, text: str, start: int) -> int:
    """The offset of `text` in `context` nearest to the given start (a few CMRC starts are off by some chars)."""
    if 0 <= start and context[start:start + len(text)] == text:
        return start
    best, pos = -1, context.find(text)
    while pos >= 0:
        if best < 0 or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1)
    return best


def read_squad(path: str | Path, require_answers: bool = True) -> list[MrcExample]:
    """SQuAD v1 JSON (CMRC 2018, DRCD): data[].paragraphs[].{context, qas[].{id, question, answers}}."""
    return _read_mrc(Path(path), cjrc=False, require_answers=require_answers)


def read_cjrc(path: str | Path, require_answers: bool = True) -> list[MrcExample]:
    """CJRC JSON: like SQuAD 2, answers may be "YES", "NO" or "" (unanswerable); each record has a domain."""
    return _read_mrc(Path(path), cjrc=True, require_answers=require_answers)


def _read_mrc(path: Path, cjrc: bool, require_answers: bool) -> list[MrcExample]:
    data = _load_json(path)
    cache: dict = {}
    examples: list[MrcExample] = []
    seen: set[str] = set()
    for a_i, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise UserError(f"data[{a_i}] has no paragraphs list", path)
        domain = article.get("domain")
        if cjrc and domain not in ("civil", "criminal"):
            raise UserError(f"data[{a_i}] domain must be civil or criminal, got {domain!r}", path,
                            _line_of(cache, path, f'"caseid": "{article.get("caseid")}"'))
        for p_i, para in enumerate(article["paragraphs"]):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str) or not isinstance(para.get("qas"), list):
                raise UserError(f"data[{a_i}].paragraphs[{p_i}] needs a context string and a qas list", path)
            context_id = str(para.get("id", f"{a_i}-{p_i}"))
            for qa in para["qas"]:
                qid = str(qa.get("id", "")).strip() if isinstance(qa, dict) else ""

                def fail(message: str) -> UserError:  # the line is looked up only when there is an error
                    return UserError(message, path, _line_of(cache, path, f'"{qid}"') if qid else None)

                if not qid or not isinstance(qa.get("question"), str):
                    raise fail(f"a question in data[{a_i}].paragraphs[{p_i}] lacks an id or question text")
                if qid in seen:
                    raise fail(f"duplicate question id {qid!r}")
                seen.add(qid)
                raw = qa.get("answers", [])
                if not isinstance(raw, list) or any(not isinstance(a, dict) or not isinstance(a.get("text"), str)
                                                   for a in raw):
                    raise fail(f"question {qid}: answers must be a list of {{text, answer_start}}")
                if require_answers and not raw and not cjrc:
                    raise fail(f"question {qid} has no answers")
                answers: list[Answer] = []
                kind = SPAN
                if cjrc:
                    first = raw[0]["text"] if raw else ""
                    kind = {"YES": YES, "NO": NO, "": UNKNOWN}.get(first, SPAN)
                for a in raw:
                    text = a["text"]
                    if text in ("YES", "NO", "") and cjrc:
                        answers.append(Answer(text, -1))
                        continue
                    try:
                        start = int(a.get("answer_start", -1))
                    except (TypeError, ValueError):
                        raise fail(f"question {qid}: answer_start must be an integer") from None
                    answers.append(Answer(text, _fix_start(context, text, start)))
                examples.append(MrcExample(qid=qid, question=qa["question"], context=context,
                                           context_id=context_id, answers=answers, kind=kind, domain=domain,
                                           title=article.get("title") or para.get("casename"),
                                           article=str(a_i)))
    if not examples:
        raise UserError("no questions in file", path)
    return examples


def write_mrc(path: str | Path, examples: Sequence[MrcExample], cjrc: bool = False) -> None:
    """Write examples back in their original layout (SQuAD v1, or CJRC with domains), one record per context."""
    data: list[dict] = []
    by_context: dict[str, dict] = {}
    for e in examples:
        rec = by_context.get(e.context_id)
        if rec is None:
            para = {"id": e.context_id, "context": e.context, "qas": []}
            rec = {"paragraphs": [para]}
            if cjrc:
                rec["domain"] = e.domain
                para["casename"] = e.title
            elif e.title is not None:
                rec["title"] = e.title
            by_context[e.context_id] = rec
            data.append(rec)
        qa = {"id": e.qid, "question": e.question,
              "answers": [{"text": a.text, "answer_start": a.start} for a in e.answers]}
        if cjrc:
            qa["is_impossible"] = "true" if e.kind == UNKNOWN else "false"
        rec["paragraphs"][0]["qas"].append(qa)
    atomic_write_json(path, {"version": "bertwwm-split", "data": data})


# ------------------------------------------------------------------------------------ prediction files
# The official submission layouts: CMRC 2018 / DRCD {"qid": "answer text", ...}; CJRC [{"id", "answer"}];
# classification a TSV "index<TAB>prediction" (GLUE/CLUE submission style, index = row order of the input).


def _write_squad_predictions(path: str | Path, predictions: dict[str, str]) -> None:
    atomic_write_json(path, dict(predictions))


def _write_cjrc_predictions(path: str | Path, predictions: dict[str, str]) -> None:
    atomic_write_json(path, [{"id": k, "answer": v} for k, v in dict(predictions).items()])


def _write_tsv_predictions(path: str | Path, predictions: Sequence[str]) -> None:
    atomic_write_text(path, "index\tprediction\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(predictions)))


def write_predictions(path: str | Path, fmt: str, predictions: dict[str, str] | Sequence[str]) -> None:
    """Write predictions in the layout named `fmt` (a key of PREDICTION_FORMATS)."""
    _prediction_format(fmt).write(path, predictions)


def _refuse_json(text: str, path: Path) -> None:
    """A JSON file (e.g. CMRC data) handed to a table reader would become one example of raw JSON."""
    head = text.lstrip()[:1]
    if head in ("{", "["):
        try:
            json.loads(text)
        except ValueError:
            return
        raise UserError("this is a JSON file, but the task reads a table (TSV/CSV rows of text and label); "
                        "is it the data of another task?", path)


def _unique_pairs(path: Path, text: str):
    """object_pairs_hook: a JSON object with a key twice is an error (json keeps the last silently)."""
    def hook(pairs: list) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise UserError(f"duplicate id {key!r}", path, _first_line(text, json.dumps(key, ensure_ascii=False),
                                                                           nth=2))
            seen[key] = value
        return seen
    return hook


def _first_line(text: str, needle: str, nth: int = 1) -> int | None:
    """Line number of the nth occurrence of `needle` (best effort, for messages)."""
    pos = -1
    for _ in range(nth):
        pos = text.find(needle, pos + 1)
        if pos < 0:
            return None
    return text.count("\n", 0, pos) + 1


def _read_json_predictions(path: Path, fmt: str) -> dict[str, str]:
    """{question id: answer} from the CMRC 2018 / DRCD object or the CJRC list; answers must be strings."""
    text = _read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=_unique_pairs(path, text) if fmt == "squad" else None)
    except json.JSONDecodeError as e:
        raise UserError(f"not valid JSON ({e.msg})", path, e.lineno) from None

    def answer(qid: str, value) -> str:
        if not isinstance(value, str):
            raise UserError(f"the answer for question {qid!r} must be a string, got {json.dumps(value)[:40]}", path,
                            _first_line(text, json.dumps(qid, ensure_ascii=False)))
        return value

    if fmt == "squad":
        if not isinstance(data, dict):
            raise UserError('expected a JSON object {"question id": "answer text"}', path)
        return {str(k): answer(str(k), v) for k, v in data.items()}  # ids verbatim, as the script does
    if not isinstance(data, list) or any(not isinstance(d, dict) or "id" not in d or "answer" not in d
                                         for d in data):
        raise UserError('expected a JSON list of {"id": .., "answer": ..}', path)
    out: dict[str, str] = {}
    for d in data:
        qid = str(d["id"])
        if qid in out:
            raise UserError(f"duplicate id {qid!r}", path,
                            _first_line(text, json.dumps(d["id"], ensure_ascii=False), nth=2))
        out[qid] = answer(qid, d["answer"])
    return out


def _read_squad_predictions(path: str | Path, n_examples: int | None = None) -> dict[str, str]:
    return _read_json_predictions(Path(path), "squad")


def _read_cjrc_predictions(path: str | Path, n_examples: int | None = None) -> dict[str, str]:
    return _read_json_predictions(Path(path), "cjrc")


def _read_tsv_predictions(path: str | Path, n_examples: int | None = None) -> list[str | None]:
    """Labels by row index; with `n_examples`, an index past the gold file's examples is an error."""
    path = Path(path)
    lines = [line.rstrip("\r") for line in _read_text(path).split("\n")]
    out: dict[int, str] = {}
    for i, line in enumerate(lines):
        if not line or (i == 0 and line.lower().startswith("index\t")):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise UserError("expected 'index<TAB>prediction'", path, i + 1)
        index = int(parts[0])
        if index in out:
            raise UserError(f"duplicate index {index}", path, i + 1)
        if n_examples is not None and index >= n_examples:
            raise UserError(f"index {index} is out of range: the gold file has {n_examples} examples "
                            f"(indices 0..{n_examples - 1})", path, i + 1)
        out[index] = parts[1].strip()
    size = max(out) + 1 if out else 0
    return [out.get(i) for i in range(size)]


def read_predictions(path: str | Path, fmt: str, n_examples: int | None = None) -> dict[str, str] | list[str | None]:
    """Read a predictions file written in the official layout (see write_predictions). Answers must be
    strings and ids unique; with `n_examples`, a classification index past the examples is an error."""
    return _prediction_format(fmt).read(path, n_examples)


@dataclass(frozen=True)
class PredictionFormat:
    """A prediction file layout: its name, file suffix, writer and reader (a task entry names one)."""

    name: str
    suffix: str
    write: Callable[[str | Path, dict[str, str] | Sequence[str]], None]
    read: Callable[..., dict[str, str] | list[str | None]]  # read(path, n_examples=None)


SQUAD_PREDICTIONS = PredictionFormat("squad", ".json", _write_squad_predictions, _read_squad_predictions)
CJRC_PREDICTIONS = PredictionFormat("cjrc", ".json", _write_cjrc_predictions, _read_cjrc_predictions)
TSV_PREDICTIONS = PredictionFormat("tsv", ".tsv", _write_tsv_predictions, _read_tsv_predictions)
PREDICTION_FORMATS = {f.name: f for f in (SQUAD_PREDICTIONS, CJRC_PREDICTIONS, TSV_PREDICTIONS)}


def _prediction_format(fmt: str | PredictionFormat) -> PredictionFormat:
    if isinstance(fmt, PredictionFormat):
        return fmt
    if fmt not in PREDICTION_FORMATS:
        raise ValueError(f"unknown prediction format {fmt!r}")
    return PREDICTION_FORMATS[fmt]


def drop_unanchored(examples: Sequence[MrcExample]) -> tuple[list[MrcExample], int]:
    """Training data: span questions none of whose answers occur in their context cannot be trained on as
    spans (they would teach "no answer"); returns (the others, how many were dropped)."""
    kept = [e for e in examples if not (e.kind == SPAN and e.answers and all(a.start < 0 for a in e.answers))]
    return kept, len(examples) - len(kept)
