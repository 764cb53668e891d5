"""Words -> tokens: give every WordPiece token a word-start flag, so whole words can be masked together.

The link between the segmenter's words and the tokenizer's tokens is the character offsets of both in the
original text (the tokenizer lower-cases, strips accents and drops control characters, so token strings do
not match the text). Two tokens belong to the same word when

* the second is a `##` continuation of the first (a WordPiece word is never split), or
* a segmenter word covers characters of both (multi-character Chinese words, 2019年, iPhone手机).

A token whose characters straddle two segmenter words (the tokenizer keeps "2019" whole, the segmenter split
it "20"/"19") joins both words' groups: groups only ever merge, so the result is deterministic. [UNK] is a
word on its own. Characters no segmenter word covers (a segmenter that rewrote the text) fall back to one word
per token; each such run of tokens counts as one fallback.

Speed: written by hand because no library does word alignment at corpus scale. Chinese text is almost all
CJK characters and punctuation, each always its own token whatever surrounds it, so those are looked up in a
table (built once from the real tokenizer, so the ids are the tokenizer's) and only the remaining runs
(Latin words, numbers, rare characters) go through the WordPiece tokenizer. Everything else is numpy over the
whole batch of texts.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from dataclasses import dataclass

import numpy as np

from bertwwm.text.tokens import UNK_ID, chinese_tokenizer, load_vocab
from bertwwm.text.words import Segmenter, cut_many, get_segmenter

# Character classes for the fast path.
_OTHER, _SINGLE, _BREAK = 0, 1, 2
# BERT's "Chinese character" blocks in the BMP (tokenization.py _is_chinese_char); supplementary planes are
# rare and take the ordinary tokenizer path.
_CJK_BMP = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF))
_BREAK_CHARS = " \t\n\r"  # whitespace always separates pre-tokens and never becomes a token
_SEPARATOR = "\n"  # joins the texts of a batch


@dataclass
class AlignedText:
    ids: np.ndarray  # int32 WordPiece ids of the text, NO [CLS]/[SEP] added
    word_starts: np.ndarray  # bool, same length: True where a token begins a new word
    fallbacks: int  # spans that could not be aligned and fell back to one-word-per-token


def _is_bert_punctuation(cp: int) -> bool:
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(chr(cp)).startswith("P")


@functools.cache
def _backend(vocab_path: str | None = None):
    """A private copy of the fast tokenizer's Rust backend: no truncation/padding left over from other
    callers, and literal "[SEP]" in text read as text, never as a special token."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(chinese_tokenizer(vocab_path).backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = True
    return backend


@functools.cache
def _tables(vocab_path: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class per BMP code point, token id per BMP code point, is-## flag per token id)."""
    classes = np.zeros(0x10000, dtype=np.uint8)
    ids = np.full(0x10000, -1, dtype=np.int32)
    backend = _backend(vocab_path)
    cjk = [cp for lo, hi in _CJK_BMP for cp in range(lo, hi + 1)]
    punctuation = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF and _is_bert_punctuation(cp)]
    # Punctuation must also stand apart between letters: the tokenizer's Unicode tables are older than
    # Python's, and a few recent punctuation marks (U+061D, U+2E43...) merge with their neighbours there.
    a_id = backend.token_to_id("a")
    in_context = backend.encode_batch([f"a{chr(cp)}a" for cp in punctuation], add_special_tokens=False)
    stands_apart = {cp for cp, enc in zip(punctuation, in_context) if len(enc.ids) == 3 and enc.ids[0] == a_id}
    candidates = cjk + [cp for cp in punctuation if cp in stands_apart]
    encodings = backend.encode_batch([chr(cp) for cp in candidates], add_special_tokens=False)
    for cp, enc in zip(candidates, encodings):
        # Trust the table only where the tokenizer itself makes exactly one token of the whole character.
        if len(enc.ids) == 1 and enc.offsets[0] == (0, 1):
            classes[cp] = _SINGLE
            ids[cp] = enc.ids[0]
    for ch in _BREAK_CHARS:
        classes[ord(ch)] = _BREAK
    vocab = load_vocab(vocab_path)
    continuation = np.zeros(len(vocab), dtype=bool)
    for token, i in vocab.items():
        continuation[i] = token.startswith("##")
    return classes, ids, continuation


def _without_surrogates(text: str) -> str:
    # Lone surrogates (undecodable bytes kept by surrogateescape) break the tokenizer and rjieba alike.
    # U+FFFD keeps every offset where it was.
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _tokenize(joined: str, cps: np.ndarray, vocab_path: str | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens of `joined` (whose code points are `cps`) as (ids, start, end) in character offsets."""
    classes, single_ids, _ = _tables(vocab_path)
    bmp = np.minimum(cps, 0xFFFF)
    cls = np.where(cps > 0xFFFF, _OTHER, classes[bmp])

    single_pos = np.flatnonzero(cls == _SINGLE)
    single_ids_here = single_ids[bmp[single_pos]]

    other = np.concatenate(([False], cls == _OTHER, [False])).view(np.int8)
    edges = np.flatnonzero(np.diff(other))
    run_starts, run_ends = edges[0::2], edges[1::2]
    runs = [joined[s:e] for s, e in zip(run_starts.tolist(), run_ends.tolist())]
    encodings = _backend(vocab_path).encode_batch(runs, add_special_tokens=False) if runs else []
    counts = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    n_other = int(counts.sum())
    other_ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=n_other)
    spans = np.fromiter(
        itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encodings)),
        dtype=np.int64, count=2 * n_other,
    ).reshape(-1, 2)
    run_of_token = np.repeat(run_starts, counts)
    other_starts = spans[:, 0] + run_of_token
    other_ends = spans[:, 1] + run_of_token

    starts = np.concatenate((single_pos, other_starts))
    ends = np.concatenate((single_pos + 1, other_ends))
    ids = np.concatenate((single_ids_here, other_ids))
    # Stable: pieces of one character (e.g. decomposed Hangul) share a start and keep the tokenizer's order.
    order = np.argsort(starts, kind="stable")
    return ids[order], starts[order], ends[order]


def _locate_words(text: str, words: list[str]) -> tuple[list[int], list[int]]:
    """Character spans of `words` in `text`, for segmenters whose words do not concatenate to the text
    (presegmented input, segmenters that normalise). Words not found leave their characters uncovered."""
    starts, ends, pos = [], [], 0
    for word in words:
        word = word.strip()
        if not word:
            continue
        j = text.find(word, pos)
        if j < 0:
            continue
        starts.append(j)
        ends.append(j + len(word))
        pos = j + len(word)
    return starts, ends


class WordAligner:
    """Segment texts into words and tokenize them, flagging the first token of every word.

    `vocab`: the vocab.txt of an extended vocabulary (`bertwwm vocab extend`); None: the shipped one."""

    def __init__(self, segmenter: "str | Segmenter" = "jieba", *, user_dict=None, model_path=None,
                 vocab: str | None = None):
        self._spec = (segmenter, user_dict, model_path, vocab) if isinstance(segmenter, str) else None
        if isinstance(segmenter, str):
            segmenter = get_segmenter(segmenter, user_dict=user_dict, model_path=model_path)
        self.segmenter = segmenter
        self.vocab = None if vocab is None else str(vocab)

    def __getstate__(self):
        # Segmenters hold native objects (rjieba, LTP models) that do not pickle; a named segmenter is
        # rebuilt in the receiving process (spawned DataLoader / multiprocessing workers).
        return {"spec": self._spec} if self._spec is not None else self.__dict__

    def __setstate__(self, state):
        if "spec" in state:
            name, user_dict, model_path, vocab = state["spec"]
            self.__init__(name, user_dict=user_dict, model_path=model_path, vocab=vocab)
        else:
            self.__dict__.update(state)

    def align(self, text: str) -> AlignedText:
        return self.align_many([text])[0]

    def align_many(self, texts: list[str]) -> list[AlignedText]:
        """Align a batch of texts at once (the fast path; identical to calling align on each)."""
        texts = list(texts)
        if not texts:
            return []
        joined = _SEPARATOR.join(texts)
        try:
            cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            texts = [_without_surrogates(t) for t in texts]
            joined = _SEPARATOR.join(texts)
            cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        words = cut_many(self.segmenter, texts)
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        text_base = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))  # + 1: the separator
        ids, tok_start, tok_end = _tokenize(joined, cps, self.vocab)

        word_starts, word_ends = self._word_spans(texts, words, text_base)
        # Per character: covered by a segmenter word? which word? which text? (bincount + cumsum over
        # characters is several times cheaper than binary searches per token)
        n_chars = len(joined) + 1
        starts_per_char = np.bincount(word_starts, minlength=n_chars)
        covered_char = np.cumsum(starts_per_char - np.bincount(word_ends, minlength=n_chars)) > 0
        word_of_char = np.cumsum(starts_per_char > 0)
        text_of_char = np.cumsum(np.bincount(text_base[1:], minlength=n_chars))

        n = len(ids)
        first = tok_start
        last = np.maximum(tok_end - 1, tok_start)
        w_first = word_of_char[first]
        w_last = word_of_char[last]
        covered = covered_char[first] & covered_char[last] & (tok_end > tok_start)
        text_of_token = text_of_char[first]

        _, _, continuation = _tables(self.vocab)
        is_unk = ids == UNK_ID
        starts = np.ones(n, dtype=bool)
        if n > 1:
            same_word = (w_last[:-1] == w_first[1:]) & covered[:-1] & covered[1:]
            same_word &= ~is_unk[:-1] & ~is_unk[1:]
            attached = continuation[ids[1:]] | same_word
            attached &= text_of_token[1:] == text_of_token[:-1]
            starts[1:] = ~attached

        # Fallbacks: maximal runs of uncovered tokens, per text.
        uncovered = ~covered
        run_begin = uncovered.copy()
        if n > 1:
            run_begin[1:] &= ~uncovered[:-1] | (text_of_token[1:] != text_of_token[:-1])
        fallbacks = np.bincount(text_of_token[run_begin], minlength=len(texts))

        per_text = np.bincount(text_of_token, minlength=len(texts))
        bounds = np.concatenate(([0], np.cumsum(per_text))).tolist()
        ids = ids.astype(np.int32, copy=False)
        return [
            AlignedText(ids=ids[a:b], word_starts=starts[a:b], fallbacks=int(f))
            for a, b, f in zip(bounds[:-1], bounds[1:], fallbacks.tolist())
        ]

    @staticmethod
    def _word_spans(texts: list[str], words: list[list[str]], text_base: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Global (start, end) character spans of all segmenter words of the batch (non-overlapping)."""
        exact = [sum(map(len, ws)) == len(t) and "".join(ws) == t for t, ws in zip(texts, words)]
        exact_words = [ws for ws, ok in zip(words, exact) if ok]
        n_words = np.fromiter(map(len, exact_words), dtype=np.int64, count=len(exact_words))
        word_len = np.fromiter(map(len, itertools.chain.from_iterable(exact_words)), dtype=np.int64,
                               count=int(n_words.sum()))
        ends_in_batch = np.cumsum(word_len)
        # Offsets restart at each text: subtract the running total at the text's first word.
        first_word = np.concatenate(([0], np.cumsum(n_words)[:-1]))
        before = np.concatenate(([0], ends_in_batch))[first_word]
        base = text_base[np.flatnonzero(exact)]
        shift = np.repeat(base - before, n_words)
        starts = [ends_in_batch - word_len + shift]
        ends = [ends_in_batch + shift]
        for t, (text, ws, ok) in enumerate(zip(texts, words, exact)):
            if not ok:
                s, e = _locate_words(text, ws)
                starts.append(np.asarray(s, dtype=np.int64) + text_base[t])
                ends.append(np.asarray(e, dtype=np.int64) + text_base[t])
        return np.concatenate(starts), np.concatenate(ends)
