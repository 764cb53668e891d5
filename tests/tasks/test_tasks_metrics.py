"""Official metrics on cases computed by hand, and the nltk word_tokenize reduction they rely on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertwwm.tasks import metrics as M
from bertwwm.tasks.readers import Answer, MrcExample


def _ex(qid, answers, domain=None, kind="span"):
    return MrcExample(qid=qid, question="?", context="", context_id=qid, answers=[Answer(a, -1) for a in answers],
                      domain=domain, kind=kind)


def test_mixed_segmentation_by_hand():
    # CJK one by one, the run between them through the treebank rules (comma and "!" split off), lower-cased
    assert M.mixed_segmentation("Hello, World!中文") == ["hello", ",", "world", "!", "中", "文"]
    # the script's punctuation: kept as tokens, or dropped with remove_punctuation; ASCII "-" breaks runs
    assert M.mixed_segmentation("《战国无双3》") == ["《", "战", "国", "无", "双", "3", "》"]
    assert M.mixed_segmentation("《战国无双3》", remove_punctuation=True) == ["战", "国", "无", "双", "3"]
    assert M.mixed_segmentation("ω-force") == ["ω", "-", "force"]
    assert M.mixed_segmentation("ω-force", remove_punctuation=True) == ["ωforce"]  # dropped, run continues
    assert M.mixed_segmentation("15.4寸") == ["15.4", "寸"]
    assert M.mixed_segmentation("  ") == []


def test_punctuation_list_quirks():
    assert M.remove_punctuation(" 《A》、b-c：“d” ") == "abcd"
    # the script lists "……" as one two-character entry and compares single characters: "…" survives
    assert M.remove_punctuation("好…") == "好…"
    # ASCII "," "." "(" ")" are not on the list
    assert M.remove_punctuation("(1,2.)") == "(1,2.)"


def test_cmrc_f1_em_by_hand():
    # gold [光 荣 和 ωforce], prediction [光 荣]: LCS 2, P 1, R 1/2 -> F1 2/3
    assert M.cmrc_f1(["光荣和ω-force"], "光荣") == pytest.approx(2 / 3)
    # English run: gold [new york city], prediction [new york]: P 1, R 2/3 -> 0.8
    assert M.cmrc_f1(["New York City"], "new york") == pytest.approx(0.8)
    # longest common SUBSTRING, not subsequence: gold [甲 乙 丙 丁], prediction [甲 丙 丁] -> LCS 2: P 2/3, R 1/2
    assert M.cmrc_f1(["甲乙丙丁"], "甲丙丁") == pytest.approx(4 / 7)
    # several references: the maximum
    assert M.cmrc_f1(["完全不同", "甲乙丙丁", "甲乙"], "甲乙") == 1.0
    # punctuation and case do not matter for EM
    assert M.cmrc_em(["《战国无双3》"], "战国无双3") == 1
    assert M.cmrc_em(["ABC公司"], "abc公司。") == 1
    assert M.cmrc_em(["ABC公司"], "ABC 公司") == 0  # a space is not on the list
    # empty predictions score 0
    assert M.cmrc_f1(["答案"], "") == 0.0 and M.cmrc_em(["答案"], "") == 0


def test_cmrc2018_scores_total_and_skip():
    gold = [_ex("q1", ["光荣和ω-force"]), _ex("q2", ["New York City", "纽约"]), _ex("q3", ["甲乙丙丁"]),
            _ex("q4", ["答案"])]
    preds = {"q1": "光荣", "q2": "纽约", "q3": "甲丙丁"}  # q4 missing
    s = M.cmrc2018_scores(gold, preds)
    assert s["total"] == 4 and s["skip"] == 1
    assert s["em"] == pytest.approx(100 * 1 / 4)
    assert s["f1"] == pytest.approx(100 * (2 / 3 + 1 + 4 / 7 + 0) / 4)


def test_gold_scores_100_on_the_dev_files(shared_data):
    from bertwwm.tasks.readers import read_squad

    for f in ("cmrc2018/dev.json", "drcd/DRCD_dev.json"):
        gold = read_squad(shared_data / "tasks" / f)
        s = M.cmrc2018_scores(gold, {e.qid: e.answers[0].text for e in gold})
        assert s == {"em": 100.0, "f1": 100.0, "total": len(gold), "skip": 0}


def test_cjrc_by_hand():
    golds = ["夫妻感情破裂", "因夫妻感情破裂", "夫妻感情破裂"]
    assert M.cjrc_turn_score(golds, "夫妻感情破裂") == (1.0, 1.0)
    # leave-one-out: out 0 -> {因.., 夫..}: EM 1; out 1 -> {夫.., 夫..}: EM 0, F1 = 2*(6/7)*1/(6/7+1) = 12/13
    em, f1 = M.cjrc_turn_score(golds, "因夫妻感情破裂")
    assert em == pytest.approx(2 / 3) and f1 == pytest.approx((1 + 12 / 13 + 1) / 3)
    # only letters and digits count; case-insensitive
    assert M.cjrc_turn_score(["2,000元"], "2000元。") == (1.0, 1.0)
    assert M.cjrc_turn_score(["YES", "YES", "YES"], "NO") == (0.0, 0.0)
    assert M.cjrc_turn_score([""], "") == (1.0, 1.0)  # unanswerable, predicted unanswerable
    assert M.cjrc_turn_score([""], "有答案") == (0.0, 0.0)
    gold = [_ex("1", ["YES", "YES", "YES"], "civil"), _ex("2", ["", "", ""], "civil"),
            _ex("3", ["800元", "生活费800元", "800元"], "criminal"), _ex("4", ["NO"], "criminal")]
    s = M.cjrc_scores(gold, {"1": "YES", "2": "x", "3": "800元"})  # 4 missing: counted, scores 0
    assert s["civil"] == {"em": 50.0, "f1": 50.0, "qas": 2}
    # q3: out 0 -> max(EM 0, 1) = 1; out 1 -> EM 1; out 2 -> EM 1 => EM 1, F1 1
    assert s["criminal"] == {"em": 50.0, "f1": 50.0, "qas": 2}
    assert s["overall"] == {"em": 50.0, "f1": 50.0, "qas": 4} and s["skip"] == 1


def test_accuracy():
    assert M.accuracy(["1", "0", "1", "1"], ["1", "1", None, "1"]) == {"accuracy": 50.0, "total": 4, "skip": 1}


# --- nltk.word_tokenize without the punkt model -------------------------------------------------------

def test_word_tokenize_matches_treebank_on_single_sentence_runs():
    from nltk.tokenize import NLTKWordTokenizer

    for run in ["hello world", "u.s.a", "3.14%", "(abc) 'quoted' \"x\"", "don't stop", "ω-force", "2,000 yuan"]:
        assert M.cmrc_segmentation_is_exact(run)
        assert M._word_tokenize(run) == NLTKWordTokenizer().tokenize(run)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1 .?!,'\"()%", max_size=14))
def test_sentence_break_candidates_are_model_independent(text):
    """Where the candidate regex finds nothing, Punkt keeps the run whole whatever its trained parameters:
    the untrained splitter and one that knows abbreviations and collocations agree (one sentence)."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    trained = PunktParameters()
    trained.abbrev_types.update({"a", "b", "ab", "a.b"})
    trained.collocations.add(("a", "b"))
    trained.sent_starters.add("b")
    if not M._BREAK_CANDIDATE.search(text):
        for splitter in (PunktSentenceTokenizer(), PunktSentenceTokenizer(trained)):
            assert len(splitter.tokenize(text)) <= 1
