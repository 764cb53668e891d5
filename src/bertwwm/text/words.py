"""Text -> words: Chinese word segmenters behind one small interface.

jieba is the default (the segmenter the BERT-wwm report used; its dictionary ships with the package and works
offline). rjieba is jieba's Rust port, much faster and almost always identical. `presegmented` reads words
separated by whitespace. LTP and pkuseg are optional extras that load a local model folder.

Segmenters are created lazily and cached per (name, user dictionary, model path): building jieba's prefix
dictionary costs about half a second, LTP models far more.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

from bertwwm.core.errors import UserError

SEGMENTERS = ("jieba", "rjieba", "presegmented", "ltp", "pkuseg")
# ASCII letters/digits joined by - _ . (rjieba keeps these whole, jieba splits most of them)
_JOIN_INSIDE = re.compile(r"[A-Za-z0-9][-_.][A-Za-z0-9%]")
_JOINED_ASCII = re.compile(r"[A-Za-z0-9._%-]+")


@runtime_checkable
class Segmenter(Protocol):
    name: str

    def cut(self, text: str) -> list[str]:
        """The words of `text`, in order."""
        ...


def read_user_dict(path: str | Path) -> list[tuple[str, int | None, str | None]]:
    """Parse a jieba-format user dictionary: one `word [freq] [tag]` per line, blank lines ignored.

    Parsed here (not by jieba) so that a bad line is reported with its file and line number and so that
    jieba and rjieba read exactly the same entries.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError("user dictionary not found", path) from None
    except IsADirectoryError:
        raise UserError("user dictionary is a directory, expected a text file", path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"user dictionary is not UTF-8 ({e.reason})", path, line) from None
    entries: list[tuple[str, int | None, str | None]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 3:
            raise UserError(f"expected 'word [freq] [tag]', got {len(parts)} fields", path, lineno)
        word, freq, tag = parts[0], None, None
        rest = parts[1:]
        if rest and rest[0].isdigit():
            freq = int(rest.pop(0))
        if rest:
            tag = rest.pop(0)
        if rest:
            raise UserError(f"expected 'word [freq] [tag]' with an integer freq, got {line.strip()!r}", path, lineno)
        entries.append((word, freq, tag))
    return entries


class JiebaSegmenter:
    """jieba in precise mode with HMM for unknown words (jieba.lcut's default), on a private instance so that
    user dictionaries never leak into other segmenters in the same process."""

    name = "jieba"

    def __init__(self, user_dict: str | Path | None = None):
        import jieba

        entries = [] if user_dict is None else read_user_dict(user_dict)  # a bad file fails before the ~1 s load
        jieba.setLogLevel(logging.WARNING)  # its "Building prefix dict..." chatter goes to stderr otherwise
        self._jieba = jieba.Tokenizer()
        self._jieba.initialize()
        for word, freq, tag in entries:
            self._jieba.add_word(word, freq, tag)

    def cut(self, text: str) -> list[str]:
        return self._jieba.lcut(text)


class RjiebaSegmenter:
    """rjieba (jieba-rs): the same dictionary and algorithm as jieba, ~14x faster.

    The one difference found on our corpora: jieba-rs keeps ASCII runs joined by "-", "_" or "." whole
    ("zh-cn", "MS-DOS", "2015-2016") where jieba splits them. Those few words are re-cut with jieba, so both
    segmenters give the same words and switching to the fast one changes no masks.
    """

    name = "rjieba"

    def __init__(self, user_dict: str | Path | None = None):
        import rjieba

        self._user_dict = user_dict
        self._jieba = rjieba.Jieba()
        self._python_jieba: JiebaSegmenter | None = None
        if user_dict is not None:
            for word, freq, tag in read_user_dict(user_dict):
                self._jieba.add_word(word, freq, tag)

    def _recut(self, word: str) -> list[str]:
        if self._python_jieba is None:
            self._python_jieba = JiebaSegmenter(self._user_dict)
        return self._python_jieba.cut(word)

    def cut(self, text: str) -> list[str]:
        words = self._jieba.cut(text, True)
        if _JOIN_INSIDE.search(text) is None:  # the usual case, one C-level scan
            return words
        return list(itertools.chain.from_iterable(
            self._recut(w) if _JOIN_INSIDE.search(w) and _JOINED_ASCII.fullmatch(w) and not self._jieba.has_word(w)
            else (w,)
            for w in words))


class PresegmentedSegmenter:
    """Input already segmented: words are separated by whitespace."""

    name = "presegmented"

    def cut(self, text: str) -> list[str]:
        return text.split()


def _require_model_path(name: str, model_path: str | Path | None, extra: str) -> Path:
    if model_path is None:
        raise UserError(f"the {name} segmenter needs a local model: pass --segmenter-model PATH ({extra})")
    path = Path(model_path)
    if not path.exists():
        raise UserError(f"{name} model not found", path)
    return path


class LtpSegmenter:
    """LTP (HIT) word segmentation from a local model folder (optional extra: `pip install ltp`)."""

    name = "ltp"

    def __init__(self, model_path: str | Path | None, user_dict: str | Path | None = None):
        try:
            from ltp import LTP
        except ImportError:
            raise UserError("the ltp segmenter needs the optional package 'ltp' (pip install ltp)") from None
        path = _require_model_path("ltp", model_path, "a downloaded LTP model folder")
        try:
            self._ltp = LTP(str(path))
        except Exception as e:  # LTP raises assorted errors for a bad folder; the user can only fix the path
            raise UserError(f"could not load the LTP model: {e}", path) from None
        if user_dict is not None:
            words = [w for w, _, _ in read_user_dict(user_dict)]
            if hasattr(self._ltp, "add_words"):
                self._ltp.add_words(words)
            else:
                self._ltp.add_words(words=words)

    def cut_many(self, texts: list[str]) -> list[list[str]]:
        if hasattr(self._ltp, "pipeline"):  # LTP >= 4.2
            return [list(ws) for ws in self._ltp.pipeline(texts, tasks=["cws"]).cws]
        segs, _ = self._ltp.seg(texts)  # LTP 4.0/4.1
        return [list(ws) for ws in segs]

    def cut(self, text: str) -> list[str]:
        return self.cut_many([text])[0]


class PkusegSegmenter:
    """pkuseg (PKU) from a local model folder (optional extra: `pip install spacy-pkuseg` or `pkuseg`)."""

    name = "pkuseg"

    def __init__(self, model_path: str | Path | None, user_dict: str | Path | None = None):
        try:
            import spacy_pkuseg as pkuseg
        except ImportError:
            try:
                import pkuseg
            except ImportError:
                raise UserError(
                    "the pkuseg segmenter needs the optional package 'spacy-pkuseg' (pip install spacy-pkuseg)"
                ) from None
        path = _require_model_path("pkuseg", model_path, "a downloaded pkuseg model folder")
        words = "default" if user_dict is None else [w for w, _, _ in read_user_dict(user_dict)]
        try:
            self._seg = pkuseg.pkuseg(model_name=str(path), user_dict=words)
        except Exception as e:
            raise UserError(f"could not load the pkuseg model: {e}", path) from None

    def cut(self, text: str) -> list[str]:
        return list(self._seg.cut(text))


@functools.lru_cache(maxsize=16)
def _cached_segmenter(name: str, user_dict: str | None, model_path: str | None) -> Segmenter:
    if name == "jieba":
        return JiebaSegmenter(user_dict)
    if name == "rjieba":
        return RjiebaSegmenter(user_dict)
    if name == "presegmented":
        if user_dict is not None:
            raise UserError("a user dictionary has no effect on presegmented input; drop --user-dict")
        return PresegmentedSegmenter()
    if name == "ltp":
        return LtpSegmenter(model_path, user_dict)
    if name == "pkuseg":
        return PkusegSegmenter(model_path, user_dict)
    raise UserError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


def get_segmenter(name: str = "jieba", *, user_dict: str | Path | None = None,
                  model_path: str | Path | None = None) -> Segmenter:
    """The segmenter `name` (one of SEGMENTERS), created on first use and cached for the process."""
    if model_path is not None and name not in ("ltp", "pkuseg"):
        raise UserError(f"a model path only applies to the ltp and pkuseg segmenters, not {name!r}")
    key_dict = None if user_dict is None else str(Path(user_dict).resolve())
    key_model = None if model_path is None else str(Path(model_path).resolve())
    return _cached_segmenter(name, key_dict, key_model)


def cut_many(segmenter: Segmenter, texts: list[str]) -> list[list[str]]:
    """Segment many texts, batched where the segmenter can batch (LTP)."""
    batch = getattr(segmenter, "cut_many", None)
    if batch is not None:
        return batch(texts)
    cut = segmenter.cut
    return [cut(t) for t in texts]
