"""Tokenised documents -> pretraining instances, in BERT style (segment pairs + NSP) or RoBERTa style (packed).

BERT style follows `create_instances_from_document` of google-research/bert's create_pretraining_data.py:
segments are sentences; a chunk of sentences is gathered up to a target length (the full length, or with
probability `short_seq_prob` a random shorter one, drawn once per document as Google does); segment A is a
random prefix of the chunk; B is the rest of the chunk (label 0) or, half of the time or when the chunk has one
sentence, text from a random other document (label 1) whose unused sentences are put back. Pairs are trimmed
with Google's `truncate_seq_pair` rule: always trim the longer side, each token from the front or the back at
random. Random documents are drawn from the same shard (Google draws from all documents it holds in memory;
a shard is our unit of memory).

RoBERTa style (FULL-SENTENCES in the RoBERTa paper): sentences are packed contiguously up to the maximum
length and may cross document boundaries, with an extra [SEP] between documents; no NSP.

One deviation from Google, to lose no text: a sentence longer than an instance can hold is cut into pieces
that fit, instead of being truncated away.

Everything works on one flat token array per shard (`TokenizedDocs`), so a segment is just a [start, end)
range; word starts travel alongside the ids and the first token of every segment is marked as a word start
(a truncated word fragment becomes a word of its own and is never glued to [CLS]/[SEP]).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bertwwm.text.tokens import CLS_ID, SEP_ID

# Sentence ends: Chinese and ASCII ! ? and 。, runs of them (？！), closing quotes/brackets after them, an
# ASCII full stop followed by whitespace, and line breaks.
_SENTENCE = re.compile(  # (written as an unrolled loop: twice as fast as an alternation per character)
    r"[^。！？!?.\n]*(?:\.(?!\s)[^。！？!?.\n]*)*(?:(?:[。！？!?]+|\.(?=\s))[”’\"'」』）)\]]*)?")


def split_sentences(text: str) -> list[str]:
    """Split a document into sentences on sentence-final punctuation and newlines (empty pieces dropped)."""
    return [s for s in (m.strip() for m in _SENTENCE.findall(text)) if s]


@dataclass
class TokenizedDocs:
    """Documents as one flat token array: sentence k is ids[sentence_offsets[k]:sentence_offsets[k+1]] and
    document d is sentences doc_offsets[d]..doc_offsets[d+1]-1. Documents without tokens are left out."""

    ids: np.ndarray  # int32
    word_starts: np.ndarray  # bool
    sentence_offsets: np.ndarray  # int64, n_sentences + 1
    doc_offsets: np.ndarray  # int64, n_documents + 1

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.sentence_offsets[-1])

    @classmethod
    def from_sentences(cls, documents: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
                       max_sentence_tokens: int | None = None) -> "TokenizedDocs":
        """Build from documents given as lists of (ids, word_starts) per sentence. Sentences longer than
        `max_sentence_tokens` are cut into pieces; empty sentences and documents are dropped."""
        ids_parts: list[np.ndarray] = []
        start_parts: list[np.ndarray] = []
        sentence_lengths: list[int] = []
        doc_offsets = [0]
        for doc in documents:
            n_before = len(sentence_lengths)
            for ids, starts in doc:
                n = len(ids)
                if n == 0:
                    continue
                ids_parts.append(np.asarray(ids, dtype=np.int32))
                start_parts.append(np.asarray(starts, dtype=bool))
                step = n if not max_sentence_tokens else max_sentence_tokens
                sentence_lengths.extend([step] * (n // step))
                if n % step:
                    sentence_lengths.append(n % step)
            if len(sentence_lengths) > n_before:
                doc_offsets.append(len(sentence_lengths))
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int32)
        starts = np.concatenate(start_parts) if start_parts else np.zeros(0, bool)
        sentence_offsets = np.zeros(len(sentence_lengths) + 1, dtype=np.int64)
        np.cumsum(sentence_lengths, out=sentence_offsets[1:])
        return cls(ids, starts, sentence_offsets, np.asarray(doc_offsets, dtype=np.int64))


@dataclass
class Instances:
    """A set of instances as flat arrays, [CLS]/[SEP] included (the shard layout of `bertwwm.data.storage`)."""

    ids: np.ndarray  # uint16 flat (the storage dtype; the vocabulary has 21,128 entries)
    word_starts: np.ndarray  # bool flat
    offsets: np.ndarray  # int64, n + 1
    segment_b_start: np.ndarray  # int32, n
    nsp_labels: np.ndarray | None  # int8, n (0 = real next, 1 = random); None without NSP

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.offsets[i], self.offsets[i + 1]
        return self.ids[s:e], self.word_starts[s:e]


@dataclass
class Pieces:
    """Instances before assembly: each is a flat list [start0, end0, start1, end1, ...] of token ranges of a
    `TokenizedDocs` (a range with start -1 stands for a [SEP]), to be wrapped in [CLS] ... [SEP]."""

    ranges: list[list[int]]
    segment_b_start: list[int]
    nsp_labels: list[int] | None

    def __len__(self) -> int:
        return len(self.ranges)

    def __add__(self, other: "Pieces") -> "Pieces":
        nsp = None if self.nsp_labels is None else self.nsp_labels + other.nsp_labels
        return Pieces(self.ranges + other.ranges, self.segment_b_start + other.segment_b_start, nsp)


def assemble(docs: TokenizedDocs, pieces: Pieces, order: Sequence[int] | np.ndarray | None = None,
             dtype=np.uint16) -> Instances:
    """Materialise instances (optionally in the given order) as flat arrays, in one vectorised gather."""
    if order is None:
        order = range(len(pieces))
    n_src = len(docs.ids)
    cls_range, sep_range = [n_src, n_src + 1], [n_src + 1, n_src + 2]
    ranges = pieces.ranges
    flat = np.fromiter(itertools.chain.from_iterable(
        itertools.chain(cls_range, ranges[i], sep_range) for i in order), dtype=np.int64)
    counts = np.fromiter((len(ranges[i]) // 2 + 2 for i in order), dtype=np.int64, count=len(order))
    seg = flat.reshape(-1, 2)
    is_sep = seg[:, 0] < 0
    seg_start = np.where(is_sep, n_src + 1, seg[:, 0])
    seg_len = np.where(is_sep, 1, seg[:, 1] - seg[:, 0])
    seg_out = np.zeros(len(seg_len) + 1, dtype=np.int64)
    np.cumsum(seg_len, out=seg_out[1:])
    gather = np.repeat(seg_start - seg_out[:-1], seg_len)
    gather += np.arange(len(gather), dtype=np.int64)
    src_ids = np.concatenate((docs.ids.astype(dtype, copy=False), np.array([CLS_ID, SEP_ID], dtype=dtype)))
    src_starts = np.concatenate((docs.word_starts, [True, True]))
    ids = src_ids[gather]
    starts = src_starts[gather]
    starts[seg_out[:-1]] = True  # the first token of every segment begins a word
    seg_first = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=seg_first[1:])
    offsets = seg_out[seg_first]
    order = np.asarray(order, dtype=np.int64)
    b_start = np.asarray(pieces.segment_b_start, dtype=np.int32)[order] if len(order) else np.zeros(0, np.int32)
    nsp = None
    if pieces.nsp_labels is not None:
        nsp = np.asarray(pieces.nsp_labels, dtype=np.int8)[order] if len(order) else np.zeros(0, np.int8)
    return Instances(ids, starts, offsets, b_start, nsp)


def _trim_counts(la: int, lb: int, max_tokens: int) -> tuple[int, int]:
    """How many tokens Google's truncate_seq_pair removes from A and from B: the longer side loses one token
    at a time (B on ties) until the pair fits. Closed form of that loop."""
    excess = la + lb - max_tokens
    if excess <= 0:
        return 0, 0
    ka = kb = 0
    if la > lb:
        ka = min(excess, la - lb)
    else:
        kb = min(excess, lb - la)
    rest = excess - ka - kb
    kb += (rest + 1) // 2
    ka += rest // 2
    return ka, kb


def _front_removals(rng: random.Random, k: int) -> int:
    """Of k removals each taken from the front or back with probability 1/2, how many from the front."""
    return bin(rng.getrandbits(k)).count("1") if k else 0


def bert_instances(docs: TokenizedDocs, max_seq_length: int, rng: random.Random,
                   short_seq_prob: float = 0.1) -> Instances:
    """Segment pairs with NSP labels, as Google's create_instances_from_document (see the module doc)."""
    return assemble(docs, bert_pairs(docs, max_seq_length, rng, short_seq_prob))


def bert_pairs(docs: TokenizedDocs, max_seq_length: int, rng: random.Random,
               short_seq_prob: float = 0.1) -> Pieces:
    """The ranges of BERT segment pairs with NSP labels (see the module doc)."""
    if max_seq_length < 5:
        raise ValueError("max_seq_length must be at least 5 for [CLS] A [SEP] B [SEP]")
    max_num_tokens = max_seq_length - 3
    so = docs.sentence_offsets.tolist()
    do = docs.doc_offsets.tolist()
    n_docs = len(do) - 1
    pieces: list[list[int]] = []
    b_starts: list[int] = []
    labels: list[int] = []
    rand = rng.random  # a + int(rand() * n) is uniform on a..a+n-1 like randint, at a quarter of its cost
    for d in range(n_docs):
        first, last = do[d], do[d + 1]  # sentences of this document: first .. last-1
        target = max_num_tokens
        if rand() < short_seq_prob:
            target = 2 + int(rand() * (max_num_tokens - 1))
        chunk_start = first  # current chunk: sentences chunk_start .. i
        length = 0
        i = first
        while i < last:
            length += so[i + 1] - so[i]
            if i == last - 1 or length >= target:
                n_chunk = i + 1 - chunk_start
                a_end = chunk_start + (1 + int(rand() * (n_chunk - 1)) if n_chunk >= 2 else 1)
                a0, a1 = so[chunk_start], so[a_end]
                if n_chunk == 1 or rand() < 0.5:
                    is_random = 1
                    target_b = target - (a1 - a0)
                    for _ in range(10):
                        r = int(rand() * n_docs)
                        if r != d:
                            break
                    r_first, r_last = do[r], do[r + 1]
                    j = r_first + int(rand() * (r_last - r_first))
                    b0 = so[j]
                    while True:  # take sentences until B is long enough (at least one)
                        b1 = so[j + 1]
                        j += 1
                        if b1 - b0 >= target_b or j == r_last:
                            break
                    i = a_end - 1  # the unused rest of the chunk is read again
                else:
                    is_random = 0
                    b0, b1 = a1, so[i + 1]
                ka, kb = _trim_counts(a1 - a0, b1 - b0, max_num_tokens)
                fa, fb = _front_removals(rng, ka), _front_removals(rng, kb)
                a0, a1 = a0 + fa, a1 - (ka - fa)
                b0, b1 = b0 + fb, b1 - (kb - fb)
                pieces.append([a0, a1, -1, -1, b0, b1])
                b_starts.append(2 + a1 - a0)
                labels.append(is_random)
                chunk_start = i + 1
                length = 0
            i += 1
    return Pieces(pieces, b_starts, labels)


def packed_instances(docs: TokenizedDocs, max_seq_length: int) -> Instances:
    """FULL-SENTENCES packing (see packed_sequences)."""
    return assemble(docs, packed_sequences(docs, max_seq_length))


def packed_sequences(docs: TokenizedDocs, max_seq_length: int) -> Pieces:
    """FULL-SENTENCES packing: whole sentences back to back up to max_seq_length, crossing documents with an
    extra [SEP] between them; no NSP. Sentences must fit (TokenizedDocs.from_sentences cuts long ones)."""
    capacity = max_seq_length - 2  # [CLS] ... [SEP]
    if capacity < 1:
        raise ValueError("max_seq_length must be at least 3 for [CLS] text [SEP]")
    so = docs.sentence_offsets.tolist()
    do = docs.doc_offsets.tolist()
    pieces: list[list[int]] = []
    current: list[int] = []
    used = 0
    for d in range(len(do) - 1):
        if current:  # a document boundary inside an instance: an extra [SEP]
            current += [-1, -1]
            used += 1
        for k in range(do[d], do[d + 1]):
            s, e = so[k], so[k + 1]
            if e - s > capacity:
                raise ValueError(f"sentence of {e - s} tokens does not fit max_seq_length {max_seq_length}")
            if used + (e - s) > capacity and current:
                if current[-2] < 0:  # no separator right before the final [SEP]
                    del current[-2:]
                pieces.append(current)
                current, used = [], 0
            if current and current[-2] >= 0 and current[-1] == s:
                current[-1] = e  # contiguous with the previous sentence: extend the range
            else:
                current += [s, e]
            used += e - s
    if current:
        pieces.append(current)
    lengths = [2 + sum(1 if p[k] < 0 else p[k + 1] - p[k] for k in range(0, len(p), 2)) for p in pieces]
    return Pieces(pieces, lengths, None)
