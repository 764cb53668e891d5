"""Sliding windows, offset mapping and n-best decoding: gold spans come back as the exact original text."""

from __future__ import annotations

import numpy as np
import pytest

from bertwwm.tasks.mrc import ANSWER_CLASSES, answer_token_span, build_features, decode_answers
from bertwwm.tasks.readers import Answer, MrcExample, read_squad
from bertwwm.text.tokens import CLS_ID, SEP_ID, chinese_tokenizer


def _oracle_logits(feats):
    """Logits that put all mass on the labelled start/end of each window ([CLS] when not in the window)."""
    starts, ends = [], []
    for i in range(len(feats)):
        s = np.zeros(len(feats.input_ids[i]))
        e = np.zeros(len(feats.input_ids[i]))
        s[feats.start_positions[i]] = 10
        e[feats.end_positions[i]] = 10
        starts.append(s)
        ends.append(e)
    return starts, ends


def _inside_a_token(offsets, start, end):
    """True when a gold boundary falls strictly inside one WordPiece token (e.g. "4个" in "34个")."""
    return any((a < start < b) or (a < end < b) for a, b in offsets)


@pytest.mark.parametrize("name", ["cmrc2018/dev.json", "drcd/DRCD_dev.json"])
def test_gold_spans_round_trip_on_the_whole_dev_file(shared_data, name):
    examples = read_squad(shared_data / "tasks" / name)
    tok = chinese_tokenizer()
    feats = build_features(examples, tok, max_seq_length=512, doc_stride=128)
    starts, ends = _oracle_logits(feats)
    decoded = decode_answers(examples, feats, starts, ends, max_answer_length=512)
    assert len(decoded) == len(examples)
    exact = [ex for ex in examples if decoded[ex.qid] == ex.answers[0].text]
    wrong = [ex for ex in examples if decoded[ex.qid] != ex.answers[0].text]
    # The only misses are answers whose boundary cuts a WordPiece token: no token span can reproduce them.
    for ex in wrong:
        offs = feats.context_offsets[examples.index(ex)]
        a = ex.answers[0]
        assert _inside_a_token(offs.tolist(), a.start, a.start + len(a.text)), (ex.qid, a.text, decoded[ex.qid])
        assert a.text in decoded[ex.qid]
    assert len(wrong) <= 2 and len(exact) == len(examples) - len(wrong)
    # every answer with token-aligned boundaries is reproduced exactly, traditional characters included
    if "DRCD" in name:
        assert any("歐洲" == decoded[ex.qid] for ex in exact)


def test_english_traditional_and_spaces_come_back_verbatim():
    ctx = "他於2019年在New York City工作，後來搬到「台北」。Ünïcode Café 也在這裡。"
    qs = [("New York City", "q1"), ("「台北」", "q2"), ("Ünïcode Café", "q3"), ("2019年", "q4")]
    examples = [MrcExample(qid=q, question="哪裡？", context=ctx, context_id="c",
                           answers=[Answer(t, ctx.index(t))]) for t, q in qs]
    feats = build_features(examples, chinese_tokenizer(), max_seq_length=64, doc_stride=16)
    starts, ends = _oracle_logits(feats)
    assert decode_answers(examples, feats, starts, ends) == {q: t for t, q in qs}


def test_windows_cover_the_context_and_each_token_has_one_max_context_window():
    ctx = "".join(f"第{i}段落的内容。" for i in range(60))  # ~ 360 tokens
    target = "第42段落"
    ex = MrcExample(qid="q", question="问题是什么？", context=ctx, context_id="c",
                    answers=[Answer(target, ctx.index(target))])
    feats = build_features([ex], chinese_tokenizer(), max_seq_length=64, doc_stride=20)
    n_ctx = len(feats.context_offsets[0])
    assert len(feats) > 5
    covered = np.zeros(n_ctx, dtype=int)
    max_ctx = np.zeros(n_ctx, dtype=int)
    for i in range(len(feats)):
        ids = feats.input_ids[i]
        assert len(ids) <= 64 and ids[0] == CLS_ID and ids[-1] == SEP_ID
        s, n = feats.window_start[i], len(feats.max_context[i])
        assert feats.token_type_ids[i][feats.context_offset[i]] == 1 and feats.token_type_ids[i][0] == 0
        covered[s:s + n] += 1
        max_ctx[s:s + n] += feats.max_context[i]
        if i > 0:
            assert s - feats.window_start[i - 1] == 20
    assert covered.min() >= 1 and (max_ctx == 1).all()
    labelled = [i for i in range(len(feats)) if feats.start_positions[i] > 0]
    assert labelled, "the answer is inside some window"
    for i in labelled:
        off, s = feats.context_offset[i], feats.window_start[i]
        offs = feats.context_offsets[0]
        assert ctx[offs[feats.start_positions[i] - off + s][0]:offs[feats.end_positions[i] - off + s][1]] == target
    starts, ends = _oracle_logits(feats)
    assert decode_answers([ex], feats, starts, ends) == {"q": target}


def test_max_answer_length_and_cjrc_classes():
    ctx = "甲乙丙丁戊己庚辛壬癸"
    ex = MrcExample(qid="q", question="？", context=ctx, context_id="c", answers=[Answer("甲", 0)])
    feats = build_features([ex], chinese_tokenizer(), max_seq_length=32)
    off = feats.context_offset[0]
    s = np.zeros(len(feats.input_ids[0]))
    e = np.zeros(len(feats.input_ids[0]))
    s[off + 0], e[off + 9], e[off + 2] = 5, 5, 4  # best pair is 10 tokens long
    assert decode_answers([ex], feats, [s], [e], max_answer_length=30) == {"q": ctx}
    assert decode_answers([ex], feats, [s], [e], max_answer_length=3) == {"q": "甲乙丙"}
    for kind, text in (("YES", "YES"), ("NO", "NO"), ("unknown", ""), ("span", ctx)):
        logits = np.zeros((1, len(ANSWER_CLASSES)))
        logits[0, ANSWER_CLASSES.index(kind)] = 3
        assert decode_answers([ex], feats, [s], [e], class_logits=logits) == {"q": text}


def test_answer_token_span():
    offs = np.array([[0, 1], [1, 3], [3, 4], [5, 9]])
    assert answer_token_span(offs, 1, 3) == (1, 1)
    assert answer_token_span(offs, 2, 4) == (1, 2)  # starts inside token 1
    assert answer_token_span(offs, 4, 5) is None  # only whitespace
    assert answer_token_span(offs, 0, 9) == (0, 3)
