"""Instances: Google's BERT pair semantics and RoBERTa FULL-SENTENCES packing, on real tokenised text."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from bertwwm.text.align import WordAligner
from bertwwm.text.corpus import read_documents
from bertwwm.data.instances import (TokenizedDocs, _trim_counts, bert_instances, bert_pairs, packed_instances,
                               split_sentences)
from bertwwm.data.prepare import tokenize_documents
from bertwwm.text.tokens import CLS_ID, SEP_ID


@pytest.fixture(scope="module")
def law_docs(shared_data) -> TokenizedDocs:
    texts = [d.text for d in itertools.islice(read_documents([shared_data / "corpus" / "prc-laws.txt.gz"]), 40)]
    docs, fallbacks = tokenize_documents(texts, WordAligner("rjieba"), 125)
    assert fallbacks == 0
    return docs


@pytest.fixture(scope="module")
def clue_docs(shared_data) -> TokenizedDocs:
    texts = [d.text for d in itertools.islice(read_documents([shared_data / "corpus" / "clue-small-sample.txt"]), 300)]
    return tokenize_documents(texts, WordAligner("rjieba"), 125)[0]


def test_split_sentences():
    assert split_sentences("你好。我是谁？！“好的！”他说\n第二行 Hello world. Pi is 3.14 ok!! 最后") == [
        "你好。", "我是谁？！", "“好的！”", "他说", "第二行 Hello world.", "Pi is 3.14 ok!!", "最后"]
    assert split_sentences("\n\n  \n") == []
    assert split_sentences("没有标点") == ["没有标点"]


def test_long_sentences_are_cut_to_fit():
    ids = np.arange(1000, 1300)
    docs = TokenizedDocs.from_sentences([[(ids, np.ones(300, bool))], [(ids[:0], ids[:0] > 0)]], 125)
    assert np.diff(docs.sentence_offsets).tolist() == [125, 125, 50]
    assert docs.num_documents == 1  # the empty document is dropped
    assert docs.ids.tolist() == ids.tolist()


def _google_truncate(la: int, lb: int, max_tokens: int) -> tuple[int, int]:
    """Google's truncate_seq_pair loop, literally, counting removals per side."""
    ka = kb = 0
    while la + lb > max_tokens:
        if la > lb:
            la, ka = la - 1, ka + 1
        else:
            lb, kb = lb - 1, kb + 1
    return ka, kb


def test_trim_counts_equal_googles_truncation_loop():
    rng = random.Random(0)
    for _ in range(3000):
        la, lb, m = rng.randint(1, 300), rng.randint(1, 300), rng.randint(2, 300)
        assert _trim_counts(la, lb, m) == _google_truncate(la, lb, m), (la, lb, m)


def _doc_of_token(docs: TokenizedDocs) -> np.ndarray:
    sent_doc = np.repeat(np.arange(docs.num_documents), np.diff(docs.doc_offsets))
    return np.repeat(sent_doc, np.diff(docs.sentence_offsets))


@pytest.mark.parametrize("max_len", [128, 512, 37])
def test_bert_pairs_follow_googles_rules(law_docs, max_len):
    docs = TokenizedDocs.from_sentences(
        [[(law_docs.ids[law_docs.sentence_offsets[k]:law_docs.sentence_offsets[k + 1]],
           law_docs.word_starts[law_docs.sentence_offsets[k]:law_docs.sentence_offsets[k + 1]])
          for k in range(law_docs.doc_offsets[d], law_docs.doc_offsets[d + 1])]
         for d in range(law_docs.num_documents)], max_len - 3)
    doc_of = _doc_of_token(docs)
    pieces = bert_pairs(docs, max_len, random.Random(1), short_seq_prob=0.1)
    inst = bert_instances(docs, max_len, random.Random(1), short_seq_prob=0.1)
    assert len(inst) == len(pieces) > 0
    lengths = np.diff(inst.offsets)
    assert lengths.max() <= max_len
    for k, (a0, a1, _, _, b0, b1) in enumerate(pieces.ranges):
        ids, starts = inst.get(k)
        la, lb = a1 - a0, b1 - b0
        assert la >= 1 and lb >= 1 and la + lb + 3 == len(ids) <= max_len
        assert ids[0] == CLS_ID and ids[la + 1] == SEP_ID and ids[-1] == SEP_ID
        assert inst.segment_b_start[k] == la + 2
        assert ids[1:la + 1].tolist() == docs.ids[a0:a1].tolist()
        assert ids[la + 2:-1].tolist() == docs.ids[b0:b1].tolist()
        assert starts[0] and starts[1] and starts[la + 1] and starts[la + 2] and starts[-1]
        assert doc_of[a0] == doc_of[a1 - 1] and doc_of[b0] == doc_of[b1 - 1]  # within one document each
        if inst.nsp_labels[k] == 0:  # the real continuation: same document, right after A
            assert doc_of[b0] == doc_of[a0] and b0 >= a1
        else:
            assert doc_of[b0] != doc_of[a0]
    share = inst.nsp_labels.mean()
    # Google: 50%, plus forced random B for one-sentence chunks, which are common when sentences are long
    # relative to the instance (max_len 37)
    assert 0.4 < share < (0.65 if max_len >= 128 else 0.9), share


def test_short_seq_prob_makes_shorter_instances(law_docs):
    full = bert_instances(law_docs, 128, random.Random(3), short_seq_prob=0.0)
    short = bert_instances(law_docs, 128, random.Random(3), short_seq_prob=1.0)
    assert np.diff(short.offsets).mean() < 0.85 * np.diff(full.offsets).mean()
    assert np.mean(np.diff(short.offsets) < 64) > 5 * np.mean(np.diff(full.offsets) < 64)
    # without short sequences, almost every pair from these long legal documents is filled up
    assert np.mean(np.diff(full.offsets) == 128) > 0.6


def test_bert_pairs_are_deterministic_and_seed_dependent(clue_docs):
    a = bert_instances(clue_docs, 128, random.Random(5))
    b = bert_instances(clue_docs, 128, random.Random(5))
    c = bert_instances(clue_docs, 128, random.Random(6))
    assert a.ids.tolist() == b.ids.tolist() and a.nsp_labels.tolist() == b.nsp_labels.tolist()
    assert a.ids.tolist() != c.ids.tolist()


@pytest.mark.parametrize("max_len", [128, 512])
def test_packing_keeps_every_token_in_order(clue_docs, max_len):
    inst = packed_instances(clue_docs, max_len)
    lengths = np.diff(inst.offsets)
    assert lengths.max() <= max_len
    assert inst.nsp_labels is None and (inst.segment_b_start == lengths).all()
    body, seps = [], 0
    for k in range(len(inst)):
        ids, starts = inst.get(k)
        assert ids[0] == CLS_ID and ids[-1] == SEP_ID and ids[-2] != SEP_ID
        inner = ids[1:-1]
        seps += int((inner == SEP_ID).sum())
        assert starts[1] and all(starts[1:-1][np.flatnonzero(inner == SEP_ID) + 1])
        body.extend(inner[inner != SEP_ID].tolist())
    assert body == clue_docs.ids.tolist()  # FULL-SENTENCES: nothing dropped, nothing reordered
    # one extra [SEP] per document boundary that falls inside an instance
    assert 0 < seps < clue_docs.num_documents
    # packed tightly: all instances but the last are nearly full (a sentence that does not fit starts anew)
    assert np.mean(lengths[:-1]) > 0.75 * max_len


def test_packing_never_splits_a_sentence(clue_docs):
    inst = packed_instances(clue_docs, 128)
    boundaries = set(clue_docs.sentence_offsets.tolist())
    pos = 0
    for k in range(len(inst)):
        ids, _ = inst.get(k)
        n = int((ids[1:-1] != SEP_ID).sum())
        assert pos in boundaries
        pos += n
    assert pos == clue_docs.num_tokens
