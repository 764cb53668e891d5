"""Similar-words tables (the macbert policy's): nearest neighbours of the same length, deterministic, files
that round-trip and fail clearly, and `prepare --masking macbert` plus the collator on a real slice."""

from __future__ import annotations

import gzip
import itertools
import json

import numpy as np
import pytest

from bertwwm.data.collate import WholeWordMaskCollator
from bertwwm.text.corpus import read_documents
from bertwwm.core.errors import UserError
from bertwwm.data.masking import MaskingConfig
from bertwwm.data.prepare import SIMILAR_WORDS_FILE, prepare
from bertwwm.data.similar_words import SimilarWords, TableSettings, build_from_corpus, build_table
from bertwwm.data.storage import PreparedDataset
from bertwwm.text.tokens import IGNORE_INDEX, MASK_ID, VocabInfo

VOCAB = VocabInfo.from_vocab()


def test_words_sharing_contexts_are_nearest():
    # Words as token ids: A and B (one token) share contexts p/q, C and D share r/s; E and F (two tokens)
    # share contexts too. Each word's nearest neighbour of its length is its partner.
    A, B, C, D, P, Q, R, S = ((i,) for i in range(1000, 1008))
    E, F = (2000, 2001), (2002, 2003)
    sentences = []
    for left, right, words in ((P, Q, (A, B)), (R, S, (C, D)), (Q, R, (E, F))):
        for w in words:
            sentences += [[left, w, right]] * 10 + [[right, w, left]] * 5
    corpus = [(np.array([t for w in s for t in w]), np.array([k == 0 for w in s for k in range(len(w))]))
              for s in sentences]
    table = build_table(corpus, settings=TableSettings(min_count=2, neighbours=2, dims=8))
    assert table.neighbours(A)[0] == B and table.neighbours(C)[0] == D
    assert table.neighbours(E) == [F] and table.neighbours(F) == [E]  # the only other two-token word
    for word, similar in zip(table.word_ids, table.similar):
        assert all(len(table.word_ids[j]) == len(word) and table.word_ids[j] != word for j in similar)


@pytest.fixture(scope="module")
def law_sentences(shared_data):
    from bertwwm.text.align import WordAligner

    with gzip.open(shared_data / "corpus" / "prc-laws.txt.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 1500) if line.strip()]
    return WordAligner("rjieba").align_many(lines)


def test_real_table_same_length_neighbours_deterministic_and_round_trips(law_sentences, tmp_path):
    settings = TableSettings(min_count=3)
    table = build_table(law_sentences, settings=settings)
    again = build_table(law_sentences, settings=settings)
    assert len(table) > 500
    assert table.to_json() == again.to_json()  # deterministic
    for word, similar in zip(table.word_ids, table.similar):
        assert len(similar) <= settings.neighbours and len(set(similar)) == len(similar)
        assert all(len(table.word_ids[j]) == len(word) and table.word_ids[j] != word for j in similar)
    assert any(len(w) >= 2 and s for w, s in zip(table.word_ids, table.similar))  # multi-token words too
    path = tmp_path / "similar.json"
    table.save(path)
    loaded = SimilarWords.load(path, VOCAB.size)
    assert loaded.word_ids == table.word_ids and loaded.similar == table.similar and loaded.names == table.names
    # Lookups find every word of the table by its token ids, and nothing else.
    ids = np.array([t for w in table.word_ids for t in w] + [7, 8])
    lengths = np.array([len(w) for w in table.word_ids] + [2])
    first = np.cumsum(lengths) - lengths
    entries = loaded.lookup(ids, first, lengths)
    has = np.array([bool(s) for s in table.similar] + [False])
    assert np.array_equal(entries >= 0, has) and np.array_equal(entries[has], np.flatnonzero(has))


def test_bad_table_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        SimilarWords.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="cannot read") as e:
        SimilarWords.load(bad)
    assert e.value.path == str(bad)
    bad.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(UserError, match="not a similar-words table"):
        SimilarWords.load(bad)
    table = SimilarWords([(1000,), (1001,), (2000, 2001)], [[1], [0], []], vocab_size=VOCAB.size)
    table.save(bad)
    with pytest.raises(UserError, match="vocabulary of 21128 entries"):
        SimilarWords.load(bad, 30000)
    obj = json.loads(bad.read_text(encoding="utf-8"))
    obj["words"][0]["similar"] = [2]  # a neighbour of another length
    bad.write_text(json.dumps(obj), encoding="utf-8")
    with pytest.raises(UserError, match="as many tokens"):
        SimilarWords.load(bad)


@pytest.fixture(scope="module")
def law_slice(shared_data, tmp_path_factory):
    docs = [d.text for d in itertools.islice(read_documents([shared_data / "corpus" / "prc-laws.txt.gz"]), 6)]
    path = tmp_path_factory.mktemp("laws") / "laws.txt"
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def test_prepare_macbert_static_builds_and_records_its_table(law_slice, tmp_path):
    out = tmp_path / "static"
    m = prepare(law_slice, out, segmenter="rjieba", masking="macbert", dupe_factor=1, progress=False)
    table_path = out / SIMILAR_WORDS_FILE
    assert m["config"]["masking_policy"] == "macbert"
    assert m["config"]["similar_words"]["path"] == str(table_path.resolve())
    table = SimilarWords.load(table_path, VOCAB.size)
    assert len(table) > 50
    # Static masks: the chosen positions are replaced by similar words, random tokens or kept; never [MASK].
    data = PreparedDataset(out)
    replaced = kept = 0
    for k in range(min(len(data), 200)):
        item = data[k]
        labels = np.asarray(item["labels"])
        chosen = labels != IGNORE_INDEX
        got = np.asarray(item["input_ids"])[chosen]
        assert MASK_ID not in got.tolist()
        kept += int((got == labels[chosen]).sum())
        replaced += int((got != labels[chosen]).sum())
    assert replaced > 4 * kept > 0
    # Resuming the same job reuses the table; another table is another job.
    assert prepare(law_slice, out, segmenter="rjieba", masking="macbert", dupe_factor=1, progress=False) == m
    other = tmp_path / "other.json"
    SimilarWords([(1000,), (1001,)], [[1], [0]], vocab_size=VOCAB.size).save(other)
    with pytest.raises(UserError, match="different options"):
        prepare(law_slice, out, segmenter="rjieba", masking="macbert", dupe_factor=1, progress=False,
                similar_words=other)
    with pytest.raises(UserError, match="macbert only"):
        prepare(law_slice, tmp_path / "wwm", masking="wwm", similar_words=other, progress=False)


def test_prepare_macbert_dynamic_and_the_collator(law_slice, tmp_path):
    table_path = tmp_path / "table.json"
    build_from_corpus([law_slice], segmenter="rjieba").save(table_path)
    out = tmp_path / "dynamic"
    m = prepare(law_slice, out, segmenter="rjieba", masking="macbert", dynamic=True, progress=False,
                similar_words=table_path)
    assert m["config"]["similar_words"]["path"] == str(table_path.resolve())
    assert not (out / SIMILAR_WORDS_FILE).exists()  # the given table is used, none built
    with pytest.raises(UserError, match="similar-words table"):
        WholeWordMaskCollator(MaskingConfig(policy="macbert"))
    data = PreparedDataset(out)
    collate = WholeWordMaskCollator(MaskingConfig(policy="macbert"), seed=0,
                                    similar_words=m["config"]["similar_words"]["path"])
    batch = collate([data[k] for k in range(min(len(data), 32))])
    chosen = batch["labels"] != IGNORE_INDEX
    assert chosen.any()
    assert not (batch["input_ids"][chosen] == MASK_ID).any()
    assert ((batch["input_ids"] != batch["labels"]) & chosen).sum() > 0.6 * chosen.sum()
