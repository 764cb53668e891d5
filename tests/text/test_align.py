"""Word -> token alignment: golden cases on tricky strings, the tokenizer's own ids, and properties."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertwwm.text.align import AlignedText, WordAligner
from bertwwm.text.tokens import SEP_ID, UNK_ID, chinese_tokenizer
from bertwwm.text.words import get_segmenter


class FixedWords:
    """A segmenter that returns prepared words, to force straddling and unalignable cases."""

    name = "fixed"

    def __init__(self, words: list[str]):
        self.words = words

    def cut(self, text: str) -> list[str]:
        return list(self.words)


def groups(aligned: AlignedText) -> list[list[str]]:
    tokens = chinese_tokenizer().convert_ids_to_tokens(aligned.ids.tolist())
    out: list[list[str]] = []
    for token, start in zip(tokens, aligned.word_starts.tolist()):
        if start:
            out.append([])
        out[-1].append(token)
    return out


def reference_word_starts(text: str, words: list[str]) -> list[bool]:
    """The alignment rules, computed the slow, direct way from the transformers tokenizer's offsets and
    pre-token word ids (for segmenters whose words concatenate back to the text)."""
    assert "".join(words) == text
    enc = chinese_tokenizer()(text, add_special_tokens=False, return_offsets_mapping=True,
                              split_special_tokens=True)
    ids, offsets, pre_words = enc["input_ids"], enc["offset_mapping"], enc.word_ids()
    char_word = list(itertools.chain.from_iterable([w] * len(word) for w, word in enumerate(words)))
    starts = []
    for i, (s, e) in enumerate(offsets):
        if i == 0:
            starts.append(True)
            continue
        piece = pre_words[i] == pre_words[i - 1]
        same = (ids[i] != UNK_ID and ids[i - 1] != UNK_ID
                and char_word[offsets[i - 1][1] - 1] == char_word[s])
        starts.append(not (piece or same))
    return starts


@pytest.fixture(scope="module")
def jieba_aligner():
    return WordAligner("jieba")


def test_report_sentence_groups_words_and_wordpieces(jieba_aligner):
    aligned = jieba_aligner.align("使用语言模型来预测下一个词的probability。")
    assert aligned.ids.dtype == np.int32 and aligned.word_starts.dtype == bool
    assert groups(aligned) == [["使", "用"], ["语", "言"], ["模", "型"], ["来"], ["预", "测"], ["下"], ["一", "个"],
                               ["词"], ["的"], ["pro", "##ba", "##bility"], ["。"]]
    assert aligned.fallbacks == 0


@pytest.mark.parametrize("text,expected", [
    # mixed cases follow the segmenter's words
    ("我在2019年买了iPhone手机", [["我"], ["在"], ["2019"], ["年"], ["买"], ["了"], ["iphone"], ["手", "机"]]),
    # traditional Chinese
    ("臺灣的繁體中文維基百科", [["臺"], ["灣", "的"], ["繁", "體"], ["中", "文"], ["維", "基"], ["百", "科"]]),
    # full-width letters and digits: jieba splits them, but one WordPiece word never splits
    ("全角ＡＢＣ１２３，标点", [["全", "角"], ["ａ", "##ｂ", "##ｃ", "##１", "##２", "##３"], ["，"], ["标", "点"]]),
    # emoji and a character outside the vocabulary are [UNK] words of their own
    ("😀😀表情符号𠮷字", [["[UNK]"], ["表", "情", "符", "号"], ["[UNK]"], ["字"]]),
    # mixed scripts with spaces and accents (the tokenizer lower-cases and strips accents)
    ("Hello World! 深度学习 café", [["hello"], ["world"], ["!"], ["深", "度"], ["学", "习"], ["cafe"]]),
    # literal special-token text is text, never a special token
    ("[SEP]不是特殊符号", [["["], ["sep"], ["]"], ["不", "是"], ["特", "殊", "符", "号"]]),
    # a number the tokenizer splits at the dot stays one word, as jieba has it
    ("第3.14节", [["第"], ["3", ".", "14"], ["节"]]),
])
def test_golden_groups(jieba_aligner, text, expected):
    aligned = jieba_aligner.align(text)
    assert groups(aligned) == expected
    assert aligned.fallbacks == 0


def test_user_dictionary_word_spans_script_change(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("iPhone手机\n", encoding="utf-8")
    aligned = WordAligner("jieba", user_dict=path).align("我在2019年买了iPhone手机")
    assert groups(aligned)[-1] == ["iphone", "手", "机"]


def test_token_straddling_two_words_joins_them():
    # The tokenizer keeps "2019" whole; a segmenter that split it must not split the token.
    assert groups(WordAligner(FixedWords(["20", "19", "年"])).align("2019年")) == [["2019"], ["年"]]
    # ...and when the second half belongs to the next word, the groups merge deterministically.
    assert groups(WordAligner(FixedWords(["20", "19年"])).align("2019年")) == [["2019", "年"]]
    # A segmenter word across a WordPiece boundary keeps its tokens together.
    assert groups(WordAligner(FixedWords(["probability。", "好"])).align("probability。好")) == [
        ["pro", "##ba", "##bility", "。"], ["好"]]
    # A segmenter word inside a WordPiece word does not split the pieces.
    assert groups(WordAligner(FixedWords(["proba", "bility"])).align("probability")) == [
        ["pro", "##ba", "##bility"]]


def test_unk_is_its_own_word_even_inside_a_segmenter_word():
    aligned = WordAligner("presegmented").align("表情😀符号 好")
    assert groups(aligned) == [["表", "情"], ["[UNK]"], ["符", "号"], ["好"]]


def test_unalignable_words_fall_back_to_tokens_and_are_counted():
    # A segmenter that rewrote the text: "iphone" and "ｘｙ" are not in it.
    aligned = WordAligner(FixedWords(["iphone", "手机", "ｘｙ"])).align("iPhone手机 XY 好的")
    assert groups(aligned) == [["iphone"], ["手", "机"], ["x", "##y"], ["好"], ["的"]]
    assert aligned.fallbacks == 2  # "iPhone" and "XY 好的" are two uncovered spans
    # Nothing found at all: one word per token, one fallback span.
    aligned = WordAligner(FixedWords(["完全不同"])).align("语言模型")
    assert groups(aligned) == [["语"], ["言"], ["模"], ["型"]]
    assert aligned.fallbacks == 1


def test_edge_inputs(jieba_aligner):
    assert jieba_aligner.align_many([]) == []
    for text in ["", "   ", "\x00\x01"]:
        aligned = jieba_aligner.align(text)
        assert len(aligned.ids) == 0 and len(aligned.word_starts) == 0 and aligned.fallbacks == 0
    # lone surrogates (from undecodable bytes) never crash, with either segmenter
    for name in ("jieba", "rjieba"):
        aligned = WordAligner(name).align("abc\udcff中文")
        assert groups(aligned) == [["abc"], ["中", "文"]]
    # texts of a batch never join across the boundary
    first, second = jieba_aligner.align_many(["这是", "语言"])
    assert groups(first) == [["这", "是"]] and groups(second) == [["语", "言"]]


def _corpus_lines(shared_data, per_file: int) -> list[str]:
    lines = []
    with gzip.open(shared_data / "corpus" / "prc-laws.txt.gz", "rt", encoding="utf-8") as f:
        lines += [line.strip() for line in itertools.islice(f, per_file) if line.strip()]
    with open(shared_data / "corpus" / "clue-small-sample.txt", encoding="utf-8") as f:
        lines += [line.strip() for line in itertools.islice(f, per_file) if line.strip()]
    with open(shared_data / "corpus" / "zhwiki-sample.wikiextractor.txt", encoding="utf-8") as f:
        lines += [line.rstrip("\n") for line in itertools.islice(f, per_file) if line.strip()]
    return lines


@pytest.mark.parametrize("name", ["jieba", "rjieba"])
def test_real_corpus_ids_match_the_tokenizer_and_rules(shared_data, name):
    lines = _corpus_lines(shared_data, 1500)
    aligned = WordAligner(name).align_many(lines)
    encodings = chinese_tokenizer()(lines, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    seg = get_segmenter(name)
    for line, got, want in zip(lines, aligned, encodings):
        assert got.ids.tolist() == want, line
        assert got.fallbacks == 0
    for line, got in itertools.islice(zip(lines, aligned), 0, None, 7):
        assert got.word_starts.tolist() == reference_word_starts(line, seg.cut(line)), line
    # the batched path gives exactly what one-at-a-time gives
    for line, got in itertools.islice(zip(lines, aligned), 0, None, 50):
        one = WordAligner(name).align(line)
        assert one.ids.tolist() == got.ids.tolist() and one.word_starts.tolist() == got.word_starts.tolist()


HANZI = list("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可也你说年臺灣體語術處")
CHARS = (HANZI + list("abcXYZéü") + list("0123456789") + list(" \t\n,.!?-#%[]")
         + list("，。！？、“”（）《》") + list("ＡＢＣ１２３") + ["😀", "𠮷", "\x00", "\u3000", "\u0301", "\u061d", "\u2e43", "\uf900"])
WORDS = ["iPhone", "2019年", "probability", "手机", "语言模型", "BERT-wwm", "[SEP]", "[MASK]", "3.14", "ＧＰＵ"]
TEXTS = st.lists(st.one_of(st.sampled_from(CHARS), st.sampled_from(WORDS)), max_size=40).map("".join)


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
def test_random_text_matches_tokenizer_and_reference_rules(jieba_aligner, texts):
    aligned = jieba_aligner.align_many(texts)
    seg = get_segmenter("jieba")
    for text, got in zip(texts, aligned):
        want = chinese_tokenizer()(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert got.ids.tolist() == want
        assert SEP_ID not in got.ids
        assert got.fallbacks == 0
        assert got.word_starts.tolist() == reference_word_starts(text, seg.cut(text))


@settings(max_examples=100, deadline=None)
@given(words=st.lists(st.lists(st.sampled_from(HANZI), min_size=1, max_size=4).map("".join),
                      min_size=1, max_size=12))
def test_presegmented_words_become_groups(words):
    aligned = WordAligner("presegmented").align(" ".join(words))
    expected = [list(w) for w in words]  # these characters are one token each
    assert groups(aligned) == expected
    assert aligned.fallbacks == 0


def test_single_token_table_holds_in_context():
    """Every character the fast path looks up must be one token of its own wherever it stands."""
    from bertwwm.text.align import _SINGLE, _backend, _tables

    classes, ids, _ = _tables()
    cps = np.flatnonzero(classes == _SINGLE)
    assert len(cps) > 28000  # the CJK blocks and the punctuation
    backend = _backend()
    for left, right in [("a", "b"), ("1", "2"), ("中", "文")]:
        lid = backend.encode(left, add_special_tokens=False).ids
        rid = backend.encode(right, add_special_tokens=False).ids
        encodings = backend.encode_batch([left + chr(c) + right for c in cps], add_special_tokens=False)
        bad = [chr(c) for c, e in zip(cps.tolist(), encodings) if e.ids != lid + [int(ids[c])] + rid]
        assert not bad, bad[:10]


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30))
def test_any_unicode_text_matches_the_tokenizer(jieba_aligner, text):
    aligned = jieba_aligner.align(text)
    want = chinese_tokenizer()(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert aligned.ids.tolist() == want
    assert len(aligned.word_starts) == len(want) and (not want or aligned.word_starts[0])


def test_named_aligner_pickles_for_worker_processes():
    import pickle

    aligner = pickle.loads(pickle.dumps(WordAligner("rjieba")))
    assert groups(aligner.align("使用语言模型")) == [["使", "用"], ["语", "言"], ["模", "型"]]
