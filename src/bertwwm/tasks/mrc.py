"""Span-extraction reading comprehension: sliding windows over long contexts and n-best span decoding.

Windows follow Google's run_squad.py: [CLS] question [SEP] context-window [SEP], successive windows start
`doc_stride` context tokens apart, and a token is scored only in the window where it has the most context on
both sides ("max context"). Answers are cut out of the original context through the fast tokenizer's offset
mapping, so the text is exactly the original characters (traditional characters, English, full-width
punctuation and spaces inside the span included), never a detokenised guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from bertwwm.tasks.readers import NO, SPAN, UNKNOWN, YES, MrcExample
from bertwwm.text.tokens import CLS_ID, SEP_ID

# The CJRC head's classes on [CLS]; "span" means: take the extracted span.
ANSWER_CLASSES = (SPAN, YES, NO, UNKNOWN)
_CLASS_TEXT = {YES: "YES", NO: "NO", UNKNOWN: ""}


@dataclass
class MrcFeatures:
    """The windows of a list of examples (parallel lists, one entry per window)."""

    input_ids: list[np.ndarray] = field(default_factory=list)
    token_type_ids: list[np.ndarray] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    context_offset: list[int] = field(default_factory=list)  # position of the first context token in input_ids
    window_start: list[int] = field(default_factory=list)  # index of that token among the context's tokens
    max_context: list[np.ndarray] = field(default_factory=list)  # bool per context token of the window
    start_positions: list[int] = field(default_factory=list)  # training labels; 0 ([CLS]) when not in window
    end_positions: list[int] = field(default_factory=list)
    answer_class: list[int] = field(default_factory=list)  # index into ANSWER_CLASSES
    context_offsets: list[np.ndarray] = field(default_factory=list)  # per EXAMPLE: (n_tokens, 2) char offsets

    def __len__(self) -> int:
        return len(self.input_ids)


def answer_token_span(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last context token overlapping the characters [start_char, end_char); None when none does."""
    if len(offsets) == 0 or end_char <= start_char:
        return None
    ends, starts = offsets[:, 1], offsets[:, 0]
    first = int(np.searchsorted(ends, start_char, side="right"))  # first token ending after start_char
    last = int(np.searchsorted(starts, end_char, side="left")) - 1  # last token starting before end_char
    if first >= len(offsets) or last < first:
        return None
    return first, last


def build_features(examples: Sequence[MrcExample], tokenizer, max_seq_length: int = 512, doc_stride: int = 128,
                   max_query_length: int = 64) -> MrcFeatures:
    """Tokenise questions and contexts (batched, fast tokenizer) and cut the sliding windows."""
    if max_seq_length < 16:
        raise ValueError("max_seq_length must be at least 16")
    # At most half of a window goes to the question, so short windows (tests, small models) still work.
    max_query_length = min(max_query_length, max_seq_length // 2)
    feats = MrcFeatures()
    contexts = list({e.context_id: e.context for e in examples}.items())
    ctx_index = {cid: i for i, (cid, _) in enumerate(contexts)}
    enc_ctx = tokenizer([c for _, c in contexts], add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False, verbose=False)
    enc_q = tokenizer([e.question for e in examples], add_special_tokens=False, return_attention_mask=False,
                      return_token_type_ids=False, verbose=False)
    ctx_ids = [np.asarray(ids, dtype=np.int64) for ids in enc_ctx["input_ids"]]
    ctx_offs = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in enc_ctx["offset_mapping"]]
    for ei, ex in enumerate(examples):
        ci = ctx_index[ex.context_id]
        ids, offs = ctx_ids[ci], ctx_offs[ci]
        feats.context_offsets.append(offs)
        q = np.asarray(enc_q["input_ids"][ei][:max_query_length], dtype=np.int64)
        room = max_seq_length - len(q) - 3
        span = None
        # Train on the first reference found in the context (some CMRC references are free text, start -1).
        anchored = [a for a in ex.answers if a.start >= 0 and a.text]
        if ex.kind == SPAN and anchored:
            span = answer_token_span(offs, anchored[0].start, anchored[0].start + len(anchored[0].text))
        # Window starts: 0, stride, 2*stride, ... until one window reaches the end (Google's doc_spans).
        starts = [0]
        while starts[-1] + room < len(ids):
            starts.append(starts[-1] + min(doc_stride, room))
        # Max-context score of each token in each window: min(left, right context) + 0.01 * window length.
        best_score = np.full(len(ids), -1.0)
        best_window = np.zeros(len(ids), dtype=np.int64)
        for w, s in enumerate(starts):
            n = min(room, len(ids) - s)
            pos = np.arange(n)
            score = np.minimum(pos, n - 1 - pos) + 0.01 * n
            better = score > best_score[s:s + n]
            best_score[s:s + n][better] = score[better]
            best_window[s:s + n][better] = w
        for w, s in enumerate(starts):
            n = min(room, len(ids) - s)
            input_ids = np.concatenate([[CLS_ID], q, [SEP_ID], ids[s:s + n], [SEP_ID]]).astype(np.int64)
            types = np.zeros(len(input_ids), dtype=np.int64)
            types[len(q) + 2:] = 1
            offset = len(q) + 2
            sp = ep = 0
            if span is not None and s <= span[0] and span[1] < s + n:
                sp, ep = span[0] - s + offset, span[1] - s + offset
            feats.input_ids.append(input_ids)
            feats.token_type_ids.append(types)
            feats.example_index.append(ei)
            feats.context_offset.append(offset)
            feats.window_start.append(s)
            feats.max_context.append(best_window[s:s + n] == w)
            feats.start_positions.append(sp)
            feats.end_positions.append(ep)
            feats.answer_class.append(ANSWER_CLASSES.index(ex.kind))
    return feats


def decode_answers(examples: Sequence[MrcExample], feats: MrcFeatures, start_logits: Sequence[np.ndarray],
                   end_logits: Sequence[np.ndarray], class_logits: np.ndarray | None = None, n_best: int = 20,
                   max_answer_length: int = 30) -> dict[str, str]:
    """Best answer text per question id.

    Candidates are the n_best start and n_best end tokens of each window (context tokens only, the start in
    its max-context window, end >= start, at most `max_answer_length` tokens); the highest start+end logit
    over all windows wins. With `class_logits` (CJRC), the class averaged over a question's windows decides
    between the span and "YES" / "NO" / "" (unanswerable).
    """
    best: dict[int, tuple[float, str]] = {}
    class_sum: dict[int, np.ndarray] = {}
    for f in range(len(feats)):
        ei = feats.example_index[f]
        ex = examples[ei]
        off = feats.context_offset[f]
        n = len(feats.max_context[f])
        s_log = np.asarray(start_logits[f][off:off + n], dtype=np.float64)
        e_log = np.asarray(end_logits[f][off:off + n], dtype=np.float64)
        if class_logits is not None:
            class_sum[ei] = class_sum.get(ei, 0) + np.asarray(class_logits[f], dtype=np.float64)
        k = min(n_best, n)
        top_s = np.argpartition(-s_log, k - 1)[:k] if k else []
        top_e = np.argpartition(-e_log, k - 1)[:k] if k else []
        offs = feats.context_offsets[ei]
        w0 = feats.window_start[f]
        for i in top_s:
            if not feats.max_context[f][i]:
                continue
            for j in top_e:
                if j < i or j - i + 1 > max_answer_length:
                    continue
                score = s_log[i] + e_log[j]
                if ei not in best or score > best[ei][0]:
                    text = ex.context[offs[w0 + i, 0]:offs[w0 + j, 1]]
                    best[ei] = (score, text)
    answers: dict[str, str] = {}
    for ei, ex in enumerate(examples):
        text = best[ei][1] if ei in best else ""
        if class_logits is not None and ei in class_sum:
            kind = ANSWER_CLASSES[int(np.argmax(class_sum[ei]))]
            if kind != SPAN:
                text = _CLASS_TEXT[kind]
        answers[ex.qid] = text
    return answers
