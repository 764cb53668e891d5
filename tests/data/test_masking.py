"""Masking policies: whole words, budget, Google's skip-on-overflow, 80/10/10, plain labels, no specials."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertwwm.text.align import WordAligner
from bertwwm.core.errors import UserError
from bertwwm.data.masking import (POLICIES, MaskingConfig, _select_words_greedy, _visiting_order, budget, mask_batch,
                             mask_instance)
from bertwwm.data.similar_words import SimilarWords, TableSettings, build_table
from bertwwm.text.tokens import CLS_ID, MASK_ID, SEP_ID, VocabInfo, load_vocab
from reference import SPECIAL, word_groups

VOCAB = VocabInfo.from_vocab()
ID_TO_TOKEN = {i: t for t, i in load_vocab().items()}


def instance(aligner: WordAligner, *texts: str) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] A [SEP] (B [SEP]) with word starts, as prepare builds them."""
    ids, starts = [np.array([CLS_ID])], [np.array([True])]
    for aligned in aligner.align_many(list(texts)):
        ids += [aligned.ids, np.array([SEP_ID])]
        starts += [aligned.word_starts, np.array([True])]
    return np.concatenate(ids).astype(np.int64), np.concatenate(starts)


def check_instance(ids, word_starts, cfg, masked, positions, labels):
    """Every property mask_instance promises, checked directly."""
    n_budget = budget(len(ids), cfg)
    assert np.all(np.diff(positions) > 0)  # sorted, unique
    assert len(positions) <= n_budget
    assert labels.tolist() == ids[positions].tolist()
    assert not SPECIAL & set(ids[positions].tolist())  # special tokens never chosen
    for label in labels.tolist():  # labels are plain ids: never the ##X variant of a Chinese character
        token = ID_TO_TOKEN[label]
        assert not (token.startswith("##") and len(token) == 3 and "\u4e00" <= token[2] <= "\u9fff")
    unchanged = np.ones(len(ids), dtype=bool)
    unchanged[positions] = False
    assert np.array_equal(masked[unchanged], ids[unchanged])  # nothing outside the chosen tokens changes
    chosen = set(positions.tolist())
    groups = word_groups(ids, np.ones(len(ids), bool) if cfg.policy == "char" else word_starts)
    if cfg.policy in ("wwm", "ngram", "macbert"):
        for group in groups:  # whole words only
            assert set(group) <= chosen or not set(group) & chosen
    if cfg.policy in ("wwm", "char"):
        # Google's loop: a word was only skipped when it did not fit in what was left of the budget.
        left = n_budget - len(positions)
        for group in groups:
            if not set(group) & chosen:
                assert len(group) > left
    return groups


def test_budget_follows_google():
    cfg = MaskingConfig()
    assert budget(128, cfg) == 19  # round(19.2)
    assert budget(5, cfg) == 1  # never zero
    assert budget(10, cfg) == 2  # round(1.5) == 2 (half to even, as Python 3)
    assert budget(30, cfg) == 4  # round(4.5) == 4
    assert budget(512, cfg) == 20
    assert budget(512, MaskingConfig(max_predictions=80)) == 77


def test_config_is_checked():
    for bad in (dict(policy="span"), dict(decide_per="sentence"), dict(mask_prob=0.0), dict(max_predictions=0),
                dict(mask_token_prob=0.95), dict(random_token_prob=-0.1), dict(max_ngram=0)):
        with pytest.raises(UserError):
            MaskingConfig(**bad)
    with pytest.raises(ValueError):
        mask_instance(np.array([101, 30000, 102]), np.ones(3, bool), MaskingConfig(), np.random.default_rng(0))


@pytest.fixture(scope="module")
def aligner():
    return WordAligner("jieba")


def test_report_sentence_wwm_masks_whole_words(aligner):
    ids, starts = instance(aligner, "使用语言模型来预测下一个词的probability。")
    cfg = MaskingConfig(mask_token_prob=1.0, random_token_prob=0.0)
    seen_probability = False
    for seed in range(100):  # "probability" fits only when drawn first: p = 1/11 per draw
        masked, positions, labels = mask_instance(ids, starts, cfg, np.random.default_rng(seed))
        check_instance(ids, starts, cfg, masked, positions, labels)
        assert len(positions) == 3 and set(masked[positions].tolist()) == {MASK_ID}
        seen_probability |= {15, 16, 17} <= set(positions.tolist())
    assert seen_probability  # pro ##ba ##bility masked together


def test_greedy_selection_equals_googles_loop():
    """The vectorised selection picks exactly what Google's sequential loop picks in the same word order."""
    rng = np.random.default_rng(7)
    for trial in range(200):
        n_rows = int(rng.integers(1, 6))
        counts = rng.integers(0, 25, size=n_rows)
        word_row = np.repeat(np.arange(n_rows), counts)
        word_len = rng.integers(1, 6, size=len(word_row))
        budgets = rng.integers(1, 21, size=n_rows)
        chosen = _select_words_greedy(word_len, word_row, budgets, np.random.default_rng(trial))
        # The same visiting order, then Google's loop row by row.
        order = _visiting_order(word_row, np.random.default_rng(trial))
        assert np.all(np.diff(word_row[order]) >= 0)  # grouped by row
        want = np.zeros(len(word_row), dtype=bool)
        used = np.zeros(n_rows, dtype=int)
        for w in order:
            r = word_row[w]
            if used[r] >= budgets[r]:
                continue  # Google: break (this row is done)
            if used[r] + word_len[w] > budgets[r]:
                continue
            want[w] = True
            used[r] += word_len[w]
        assert chosen.tolist() == want.tolist()


CHARS = list("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你说年") + list("abcxyz0123456789 ，。")
WORDS = ["iPhone", "2019年", "probability", "手机", "语言模型", "深度学习", "BERT", "😀"]
TEXTS = st.lists(st.one_of(st.sampled_from(CHARS), st.sampled_from(WORDS)), min_size=1, max_size=60).map("".join)


@settings(max_examples=100, deadline=None)
@given(a=TEXTS, b=TEXTS, seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(POLICIES),
       decide_per=st.sampled_from(["token", "word"]), max_predictions=st.integers(1, 20))
def test_properties_on_random_text(aligner, similar_table, a, b, seed, policy, decide_per, max_predictions):
    ids, starts = instance(aligner, a, b)
    cfg = MaskingConfig(policy=policy, decide_per=decide_per, max_predictions=max_predictions)
    masked, positions, labels = mask_instance(ids, starts, cfg, np.random.default_rng(seed),
                                              similar=similar_table if policy == "macbert" else None)
    groups = check_instance(ids, starts, cfg, masked, positions, labels)
    if policy == "char":  # every token is a word: the budget is always filled when there are enough
        assert len(positions) == min(budget(len(ids), cfg), sum(map(len, groups)))
    replaced = masked[positions]
    random_ids = set(VOCAB.random_ids.tolist())
    if policy == "macbert":  # never [MASK]; a similar word's tokens or random tokens
        allowed = random_ids | {i for w in similar_table.word_ids for i in w}
        assert all(new != MASK_ID and (new == old or new in allowed)
                   for new, old in zip(replaced.tolist(), labels.tolist()))
        return
    for new, old in zip(replaced.tolist(), labels.tolist()):
        assert new == MASK_ID or new == old or new in random_ids


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(0, 40), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1),
       policy=st.sampled_from(POLICIES))
def test_mask_batch_rows_are_independent_instances(similar_table, lengths, seed, policy):
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        body = rng.integers(200, 8000, size=n)
        rows.append((np.concatenate(([CLS_ID], body, [SEP_ID])), np.concatenate(([True], rng.random(n) < 0.6, [True]))))
    ids = np.concatenate([r[0] for r in rows])
    starts = np.concatenate([r[1] for r in rows])
    cfg = MaskingConfig(policy=policy)
    masked, chosen = mask_batch(ids, starts, np.array([len(r[0]) for r in rows]), cfg, rng,
                                similar=similar_table if policy == "macbert" else None)
    offset = 0
    for row_ids, row_starts in rows:
        n = len(row_ids)
        positions = np.flatnonzero(chosen[offset:offset + n])
        check_instance(row_ids, row_starts, cfg, masked[offset:offset + n], positions, row_ids[positions])
        offset += n


@pytest.fixture(scope="module")
def corpus_instances(shared_data):
    with gzip.open(shared_data / "corpus" / "prc-laws.txt.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 3000) if line.strip()]
    # rjieba: jieba's words (tests/text/test_words.py checks that on this text) at a tenth of the time
    aligned = WordAligner("rjieba").align_many(lines)
    ids = np.concatenate([a.ids for a in aligned]).astype(np.int64)
    starts = np.concatenate([a.word_starts for a in aligned])
    body, out = 126, []
    for i in range(len(ids) // body):
        chunk_starts = starts[i * body:(i + 1) * body].copy()
        chunk_starts[0] = True
        out.append((np.concatenate(([CLS_ID], ids[i * body:(i + 1) * body], [SEP_ID])),
                    np.concatenate(([True], chunk_starts, [True]))))
    return out[:600]


@pytest.fixture(scope="module")
def similar_table(corpus_instances):
    """A similar-words table built from the same law text (words as the aligner makes them)."""
    return build_table([(ids[1:-1], starts[1:-1]) for ids, starts in corpus_instances],
                       settings=TableSettings(min_count=3, max_words=3000, max_contexts=800))


@pytest.mark.parametrize("decide_per", ["token", "word"])
def test_80_10_10_proportions_over_many_draws(corpus_instances, decide_per):
    ids = np.concatenate([i for i, _ in corpus_instances])
    starts = np.concatenate([s for _, s in corpus_instances])
    lengths = np.array([len(i) for i, _ in corpus_instances])
    cfg = MaskingConfig(decide_per=decide_per)
    rng = np.random.default_rng(1)
    counts = np.zeros(3)
    random_drawn = []
    word_of_token = np.cumsum(starts) - 1
    for _ in range(8):
        masked, chosen = mask_batch(ids, starts, lengths, cfg, rng, VOCAB)
        pos = np.flatnonzero(chosen)
        is_mask = masked[pos] == MASK_ID
        is_kept = masked[pos] == ids[pos]
        is_random = ~is_mask & ~is_kept
        counts += [is_mask.sum(), is_random.sum(), is_kept.sum()]
        random_drawn += masked[pos[is_random]].tolist()
        assert chosen.sum() >= 0.95 * 19 * len(lengths)  # the budget (19 at length 128) is nearly always met
        if decide_per == "word":  # all tokens of a word share one decision
            kind = np.where(is_mask, 0, np.where(is_random, 1, 2))
            # pos is sorted and words are runs of tokens, so a word's chosen tokens are neighbours in pos:
            # one decision per word <=> every two neighbours of the same word got the same kind
            same_word = word_of_token[pos][1:] == word_of_token[pos][:-1]
            assert np.array_equal(kind[1:][same_word], kind[:-1][same_word])
    share = counts / counts.sum()
    # ~90k chosen tokens: the standard error of each share is about 0.001-0.0015.
    tolerance = 0.01 if decide_per == "token" else 0.02  # per word: fewer independent draws
    assert abs(share[0] - 0.8) < tolerance and abs(share[1] - 0.1) < tolerance and abs(share[2] - 0.1) < tolerance
    # Random replacements never draw specials, [unused*] or ## entries, and spread over the vocabulary.
    for token in {ID_TO_TOKEN[i] for i in random_drawn}:
        assert not token.startswith("##") and not (token.startswith("[") and token.endswith("]"))
    assert len(set(random_drawn)) > 0.5 * len(random_drawn)


def test_real_text_labels_are_plain_and_whole_words(corpus_instances, similar_table):
    rng = np.random.default_rng(3)
    for policy in POLICIES:
        cfg = MaskingConfig(policy=policy)
        for ids, starts in corpus_instances[:150]:
            check_instance(ids, starts, cfg, *mask_instance(ids, starts, cfg, rng, VOCAB,
                                                            similar_table if policy == "macbert" else None))


def test_wwm_masks_multi_character_words(corpus_instances):
    # Legal text is full of two-character words; wwm must choose them, char must split them.
    rng = np.random.default_rng(4)
    multi = {"wwm": 0, "char": 0}
    partial = {"wwm": 0, "char": 0}
    for policy in multi:
        for ids, starts in corpus_instances[:100]:
            _, positions, _ = mask_instance(ids, starts, MaskingConfig(policy=policy), rng)
            groups = word_groups(ids, starts)
            chosen = set(positions.tolist())
            multi[policy] += sum(len(g) > 1 and set(g) <= chosen for g in groups)
            partial[policy] += sum(0 < len(set(g) & chosen) < len(g) for g in groups)
    assert multi["wwm"] > 5 * max(multi["char"], 1)
    assert partial["wwm"] == 0 and partial["char"] > 100


def test_ngram_draws_spans_of_up_to_three_words():
    # One-token words so a span's length is its n. Spans may touch, so runs are an upper view of n.
    rng = np.random.default_rng(5)
    n_rows, length = 400, 128
    ids = np.tile(np.concatenate(([CLS_ID], rng.integers(200, 8000, size=length - 2), [SEP_ID])), n_rows)
    starts = np.ones(len(ids), dtype=bool)
    cfg = MaskingConfig(policy="ngram", max_ngram=3)
    _, chosen = mask_batch(ids, starts, np.full(n_rows, length), cfg, rng)
    runs = [len(list(g)) for k, g in itertools.groupby(chosen.tolist()) if k]
    share = np.bincount(runs, minlength=8)[1:] / len(runs)
    # p(n) = 1/n normalised: 0.545, 0.273, 0.182 before shortening at the budget and chance contact.
    assert 0.40 < share[0] < 0.62 and 0.18 < share[1] < 0.35 and 0.08 < share[2] < 0.25
    assert chosen.reshape(n_rows, length).sum(axis=1).max() <= budget(length, cfg)


def test_deterministic_given_a_seed(corpus_instances, similar_table):
    ids, starts = corpus_instances[0]
    for policy in POLICIES:
        cfg = MaskingConfig(policy=policy)
        table = similar_table if policy == "macbert" else None
        a = mask_instance(ids, starts, cfg, np.random.default_rng(11), similar=table)
        b = mask_instance(ids, starts, cfg, np.random.default_rng(11), similar=table)
        c = mask_instance(ids, starts, cfg, np.random.default_rng(12), similar=table)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not np.array_equal(a[1], c[1])


# -- macbert ------------------------------------------------------------------------------------------------


def _chosen_words(starts: np.ndarray, chosen: np.ndarray) -> list[tuple[int, int]]:
    """(first, length) of every chosen word group (special tokens are single, unchosen words here)."""
    bounds = np.append(np.flatnonzero(starts), len(starts))
    return [(a, b - a) for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()) if chosen[a]]


def test_macbert_needs_a_table(corpus_instances):
    ids, starts = corpus_instances[0]
    with pytest.raises(UserError, match="similar-words table"):
        mask_instance(ids, starts, MaskingConfig(policy="macbert"), np.random.default_rng(0))


def test_macbert_replaces_each_chosen_word_by_a_same_length_similar_word():
    # A hand-made table: word (1100, 1101) -> (1200, 1201) only; word (1300,) -> (1400,) or (1401,).
    table = SimilarWords([(1100, 1101), (1200, 1201), (1300,), (1400,), (1401,)], [[1], [0], [3, 4], [2], [2]])
    body = [1100, 1101, 1300, 1300, 1100, 1101, 1300, 1500, 1501, 1502] * 3
    ids = np.array([CLS_ID, *body, SEP_ID])
    first_of_word = [1, 0, 1, 1, 1, 0, 1, 1, 0, 0] * 3
    starts = np.array([True, *map(bool, first_of_word), True])
    cfg = MaskingConfig(policy="macbert", mask_prob=1.0, max_predictions=100, mask_token_prob=1.0,
                        random_token_prob=0.0)
    seen = set()
    for seed in range(20):
        masked, chosen = mask_batch(ids, starts, np.array([len(ids)]), cfg, np.random.default_rng(seed),
                                    similar=table)
        for a, n in _chosen_words(starts, chosen):
            old, new = tuple(ids[a:a + n].tolist()), tuple(masked[a:a + n].tolist())
            seen.add((old, new))
            if old in ((1100, 1101), (1300,)):
                assert new in table.neighbours(old)  # the whole word, by a neighbour of its length
            else:  # (1500, 1501, 1502) has no entry: random tokens of the same length, never [MASK]
                assert old == (1500, 1501, 1502) and MASK_ID not in new and new != old
    assert {((1300,), (1400,)), ((1300,), (1401,)), ((1100, 1101), (1200, 1201))} <= seen


def test_macbert_keeps_words_whole_and_respects_the_budget(corpus_instances, similar_table):
    ids = np.concatenate([i for i, _ in corpus_instances[:200]])
    starts = np.concatenate([s for _, s in corpus_instances[:200]])
    lengths = np.array([len(i) for i, _ in corpus_instances[:200]])
    cfg = MaskingConfig(policy="macbert")
    masked, chosen = mask_batch(ids, starts, lengths, cfg, np.random.default_rng(8), VOCAB, similar_table)
    per_row = np.add.reduceat(chosen, np.cumsum(lengths) - lengths)
    assert per_row.max() <= budget(128, cfg) and per_row.mean() > 0.9 * budget(128, cfg)
    assert np.array_equal(masked[~chosen], ids[~chosen])
    assert MASK_ID not in masked[chosen].tolist()
    bounds = np.append(np.flatnonzero(starts), len(starts))
    word_of_token = np.cumsum(starts) - 1
    chosen_per_word = np.bincount(word_of_token, weights=chosen, minlength=len(bounds) - 1)
    assert set(np.unique(chosen_per_word[chosen_per_word > 0] / np.diff(bounds)[chosen_per_word > 0])) == {1.0}


def test_macbert_80_10_10_over_many_draws(corpus_instances, similar_table):
    ids = np.concatenate([i for i, _ in corpus_instances])
    starts = np.concatenate([s for _, s in corpus_instances])
    lengths = np.array([len(i) for i, _ in corpus_instances])
    cfg = MaskingConfig(policy="macbert")
    rng = np.random.default_rng(2)
    random_ids = set(VOCAB.random_ids.tolist())
    # Words the table knows: similar 80%, random 10%, kept 10%. Others: random 90% (the [MASK] branch falls
    # back to random tokens), kept 10%.
    known = np.zeros(3)
    unknown = np.zeros(2)
    for _ in range(6):
        masked, chosen = mask_batch(ids, starts, lengths, cfg, rng, VOCAB, similar_table)
        words = _chosen_words(starts, chosen)
        first = np.array([a for a, _ in words])
        n = np.array([k for _, k in words])
        entries = similar_table.lookup(ids, first, n)
        for (a, k), e in zip(words, entries.tolist()):
            old, new = tuple(ids[a:a + k].tolist()), tuple(masked[a:a + k].tolist())
            if e >= 0:
                if new in similar_table.neighbours(old):
                    known[0] += 1
                elif new == old:
                    known[2] += 1
                else:
                    assert all(t in random_ids for t in new)
                    known[1] += 1
            elif new == old:
                unknown[1] += 1
            else:
                assert all(t in random_ids for t in new)
                unknown[0] += 1
    # ~35,000 known words (standard error of a share <= 0.0022, tolerance 0.015) and ~2,300 unknown ones
    # (standard error 0.0062, tolerance 0.035): both more than five standard errors.
    assert known.sum() > 20_000 and unknown.sum() > 1_500
    share = known / known.sum()
    assert abs(share[0] - 0.8) < 0.015 and abs(share[1] - 0.1) < 0.015 and abs(share[2] - 0.1) < 0.015
    assert abs(unknown[1] / unknown.sum() - 0.1) < 0.035


def test_macbert_leaves_other_policies_draws_unchanged(corpus_instances):
    # The macbert branch must not change what the other policies draw (docs transcripts depend on it).
    ids, starts = corpus_instances[1]
    cfg = MaskingConfig(policy="wwm")
    a = mask_instance(ids, starts, cfg, np.random.default_rng(5))
    b = mask_instance(ids, starts, cfg, np.random.default_rng(5), similar=SimilarWords([], []))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
