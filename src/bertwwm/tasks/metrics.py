"""The benchmarks' official metrics, re-implemented to give the same numbers as the official scripts.

* CMRC 2018 (and DRCD, which the BERT-wwm report scores with the same script): ymcui/cmrc2018's
  `cmrc2018_evaluate.py` (v5, SQuAD-style data): lower-case, drop the script's punctuation list, "mixed
  segmentation" (each CJK character U+4E00..U+9FA5 is a token, the runs between them go through
  nltk.word_tokenize), F1 from the longest common *substring* of the token lists, EM on the punctuation-free
  strings, maximum over the references, a question without a prediction scores 0 and is counted in "skip".
* CJRC: the CAIL 2019 reading-comprehension scorer (CoQA-derived): characters that are letters or digits,
  lower-cased; bag-of-characters F1; with several references each one is left out in turn and the maxima are
  averaged; YES / NO / "" (unanswerable) compared as text; civil, criminal and overall, rounded to 0.1.
* Accuracy (in percent) for the classification tasks.

Re-implemented rather than vendored: the scripts are Python-2 era command-line programs that read files
themselves; we need the functions on in-memory examples, with the same arithmetic.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Mapping, Sequence

from bertwwm.tasks.readers import MrcExample, TextExample

# ------------------------------------------------------------------------------------------ CMRC 2018

# The script's sp_char list, in its order. Its "……" entry is two characters long while the script tests
# single characters against the list, so "…" is never removed; we keep that behaviour to match its numbers.
CMRC_PUNCTUATION = ('-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“', '”',
                    '；', '’', '《', '》', '……', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』')
_PUNCT_CHARS = frozenset(p for p in CMRC_PUNCTUATION if len(p) == 1)
_CJK = re.compile(r"[\u4e00-\u9fa5]")


@functools.cache
def _nltk_tokenizers():
    """(punkt sentence splitter, treebank word tokenizer, exact) -- what nltk.word_tokenize uses.

    nltk.word_tokenize(text) = treebank-tokenize each sentence of punkt's English model. The punkt model
    (`punkt_tab`) is a separate download; when it is installed we use it and are exact for every input. When
    it is not (offline machines), we use an untrained Punkt splitter. That is still exact whenever a run has
    no sentence-break *candidate*: Punkt only considers breaks where one of . ? ! is followed by whitespace
    and a token, or by one of ?!)";}]*:@'({[ -- a regex of PunktLanguageVars, the same for every trained
    model; the trained parameters (abbreviations, collocations, sentence starters) only decide which
    candidates become breaks. Runs without a candidate are therefore one sentence under any model, and
    word_tokenize reduces to the treebank tokenizer on the whole run (tested in tests/tasks/test_tasks_metrics.py).
    With a candidate, the untrained splitter breaks after every period, where English punkt would not after
    a known abbreviation ("e.g.", "dr."); in CMRC 2018 dev that affects only the answers
    `cmrc_segmentation_is_exact` reports False for.
    """
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    treebank = NLTKWordTokenizer()
    try:
        from nltk.tokenize import PunktTokenizer

        return PunktTokenizer("english"), treebank, True
    except (LookupError, ImportError, OSError):
        return PunktSentenceTokenizer(), treebank, False


def _word_tokenize(text: str) -> list[str]:
    punkt, treebank, _ = _nltk_tokenizers()
    return [tok for sent in punkt.tokenize(text) for tok in treebank.tokenize(sent)]


_BREAK_CANDIDATE = re.compile(r"[.?!](?:[?!)\";}\]*:@'({\[]|\s+\S)")


def cmrc_segmentation_is_exact(text: str) -> bool:
    """True when mixed_segmentation(text) equals the official script's for certain, with or without punkt data."""
    return _nltk_tokenizers()[2] or not _BREAK_CANDIDATE.search(text.lower())


def mixed_segmentation(text: str, remove_punctuation: bool = False) -> list[str]:
    """The script's tokens: CJK characters one by one, runs of anything else through nltk's word tokenizer."""
    text = str(text).lower().strip()
    out: list[str] = []
    run = ""
    for ch in text:
        if remove_punctuation and ch in _PUNCT_CHARS:
            continue
        if _CJK.match(ch) or ch in _PUNCT_CHARS:
            if run:
                out.extend(_word_tokenize(run))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(_word_tokenize(run))
    return out


def remove_punctuation(text: str) -> str:
    return "".join(ch for ch in str(text).lower().strip() if ch not in _PUNCT_CHARS)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run of tokens (the script's find_lcs)."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                if cur[j + 1] > best:
                    best = cur[j + 1]
        prev = cur
    return best


def cmrc_f1(answers: Sequence[str], prediction: str) -> float:
    """Max over references of the LCS-based F1 on punctuation-free mixed segmentation (0..1)."""
    pred = mixed_segmentation(prediction, remove_punctuation=True)
    scores = []
    for ans in answers:
        gold = mixed_segmentation(ans, remove_punctuation=True)
        lcs = longest_common_substring(gold, pred)
        if lcs == 0:
            scores.append(0.0)
            continue
        p, r = lcs / len(pred), lcs / len(gold)
        scores.append(2 * p * r / (p + r))
    return max(scores)


def cmrc_em(answers: Sequence[str], prediction: str) -> int:
    pred = remove_punctuation(prediction)
    return int(any(remove_punctuation(a) == pred for a in answers))


def cmrc2018_scores(gold: Sequence[MrcExample], predictions: Mapping[str, str]) -> dict:
    """{"em", "f1", "total", "skip"} on the script's 0-100 scale (not rounded; the script prints %.3f)."""
    f1 = em = 0.0
    skip = 0
    for ex in gold:
        if ex.qid not in predictions:
            skip += 1
            continue
        answers = [a.text for a in ex.answers]
        prediction = predictions[ex.qid]
        if not isinstance(prediction, str):  # str(None) == "None" would be scored as an answer
            raise ValueError(f"question {ex.qid}: the prediction must be a string, got {prediction!r}")
        f1 += cmrc_f1(answers, prediction)
        em += cmrc_em(answers, prediction)
    total = len(gold)
    return {"em": 100.0 * em / max(total, 1), "f1": 100.0 * f1 / max(total, 1), "total": total, "skip": skip}


# ------------------------------------------------------------------------------------------------ CJRC


def cjrc_normalize(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isdigit() or ch.isalpha())


def _cjrc_f1(gold: str, pred: str) -> float:
    g = list(cjrc_normalize(gold)) if gold else []
    p = list(cjrc_normalize(pred)) if pred else []
    if not g or not p:
        return float(g == p)  # no-answer: 1 when both are empty
    same = sum((Counter(g) & Counter(p)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _cjrc_em(gold: str, pred: str) -> float:
    return float(cjrc_normalize(gold) == cjrc_normalize(pred))


def cjrc_turn_score(golds: Sequence[str], pred: str) -> tuple[float, float]:
    """(em, f1) of one question: with several references, leave each out in turn and average the maxima."""
    if len(golds) > 1:
        em = f1 = 0.0
        for i in range(len(golds)):
            others = list(golds[:i]) + list(golds[i + 1:])
            em += max(_cjrc_em(g, pred) for g in others)
            f1 += max(_cjrc_f1(g, pred) for g in others)
        return em / len(golds), f1 / len(golds)
    return max(_cjrc_em(g, pred) for g in golds), max(_cjrc_f1(g, pred) for g in golds)


def cjrc_scores(gold: Sequence[MrcExample], predictions: Mapping[str, str]) -> dict:
    """{"civil": {em, f1, qas}, "criminal": {...}, "overall": {...}, "skip": n}, percentages rounded to 0.1;
    em and f1 are None for a domain without questions (not 0.0, which would read as scored)."""
    totals = {d: Counter() for d in ("civil", "criminal")}
    skip = 0
    for ex in gold:
        golds = [a.text for a in ex.answers] or [""]
        if ex.domain not in totals:
            raise ValueError(f"question {ex.qid}: CJRC domain must be civil or criminal, got {ex.domain!r}")
        t = totals[ex.domain]
        t["qas"] += 1
        if ex.qid not in predictions:
            skip += 1
            continue
        em, f1 = cjrc_turn_score(golds, predictions[ex.qid])
        t["em"] += em
        t["f1"] += f1
    out: dict = {}
    for name, t in (("civil", totals["civil"]), ("criminal", totals["criminal"]),
                    ("overall", totals["civil"] + totals["criminal"])):
        n = t["qas"]
        out[name] = {"em": round(t["em"] / n * 100, 1) if n else None,
                     "f1": round(t["f1"] / n * 100, 1) if n else None, "qas": n}
    out["skip"] = skip
    return out


# ------------------------------------------------------------------------------------------ accuracy


def accuracy(gold: Sequence[str], predicted: Sequence[str | None]) -> dict:
    """{"accuracy": percent, "total", "skip"}; a missing prediction (None) counts as wrong."""
    if len(gold) != len(predicted):
        raise ValueError("gold and predictions differ in length")
    correct = sum(1 for g, p in zip(gold, predicted) if p is not None and g == p)
    skip = sum(1 for p in predicted if p is None)
    return {"accuracy": 100.0 * correct / max(1, len(gold)), "total": len(gold), "skip": skip}


def accuracy_scores(gold: Sequence[TextExample], predictions: Sequence[str | None]) -> dict:
    """accuracy() of predicted labels against the examples' labels: the classification tasks' scorer, with
    the same (examples, predictions) signature as cmrc2018_scores and cjrc_scores."""
    return accuracy([e.label for e in gold], list(predictions))
