"""Segmenters: jieba (default), rjieba, presegmented, user dictionaries, optional LTP / pkuseg."""

from __future__ import annotations

import gzip
import importlib.util
import re
import subprocess
import sys

import pytest

from bertwwm.core.errors import UserError
from bertwwm.text.words import SEGMENTERS, Segmenter, get_segmenter, read_user_dict

SENTENCE = "使用语言模型来预测下一个词的probability。"
SENTENCE_WORDS = ["使用", "语言", "模型", "来", "预测", "下", "一个", "词", "的", "probability", "。"]


@pytest.mark.parametrize("name", ["jieba", "rjieba"])
def test_jieba_family_cuts_the_report_sentence(name):
    seg = get_segmenter(name)
    assert isinstance(seg, Segmenter) and seg.name == name
    assert seg.cut(SENTENCE) == SENTENCE_WORDS
    assert seg.cut("我在2019年买了iPhone手机") == ["我", "在", "2019", "年", "买", "了", "iPhone", "手机"]


@pytest.mark.parametrize("name", ["jieba", "rjieba"])
def test_words_concatenate_back_to_the_text(name):
    # Alignment relies on this: jieba keeps every character, whitespace and oddities included.
    seg = get_segmenter(name)
    for text in ["Hello  World!\t深度学习\n", "全角ＡＢＣ１２３，标点", "😀表情𠮷字", "a\x00b\u3000c", ""]:
        assert "".join(seg.cut(text)) == text


def test_rjieba_gives_jiebas_words_on_real_text(shared_data):
    with gzip.open(shared_data / "corpus" / "prc-laws.txt.gz", "rt", encoding="utf-8") as f:
        lines = [line.strip() for _, line in zip(range(1500), f) if line.strip()]
    with open(shared_data / "corpus" / "clue-small-sample.txt", encoding="utf-8") as f:
        clue = [line.strip() for line in f if line.strip()]
    with open(shared_data / "corpus" / "zhwiki-sample.wikiextractor.txt", encoding="utf-8") as f:
        wiki = [line.strip() for line in f if line.strip()]
    # every line where jieba-rs on its own differs (ASCII joined by - _ .), plus ordinary lines
    tricky = [line for line in clue + wiki if re.search(r"[A-Za-z0-9][-_.][A-Za-z0-9%]", line)]
    assert len(tricky) > 100
    lines += tricky + clue[:1500] + wiki[:300]
    jieba, rjieba = get_segmenter("jieba"), get_segmenter("rjieba")
    assert [jieba.cut(line) for line in lines] == [rjieba.cut(line) for line in lines]


def test_rjieba_splits_joined_ascii_like_jieba():
    jieba, rjieba = get_segmenter("jieba"), get_segmenter("rjieba")
    for text in ["BERT-wwm模型", "zh-cn和zh-tw", "增长30-50%", "圆周率3.14", "MS-DOS系统", "e.g.例如", "a_b变量"]:
        assert rjieba.cut(text) == jieba.cut(text), text
    assert rjieba.cut("BERT-wwm模型")[:3] == ["BERT", "-", "wwm"]


def test_segmenters_are_cached():
    assert get_segmenter("jieba") is get_segmenter("jieba")
    assert get_segmenter("rjieba") is not get_segmenter("jieba")


def test_presegmented_splits_on_whitespace():
    seg = get_segmenter("presegmented")
    assert seg.cut("使用 语言模型  来\t预测 probability 。") == ["使用", "语言模型", "来", "预测", "probability", "。"]


@pytest.mark.parametrize("name", ["jieba", "rjieba"])
def test_user_dictionary_joins_words_without_leaking(name, tmp_path):
    path = tmp_path / "user.txt"
    path.write_text("iPhone手机\n语言模型 10 n\n\n", encoding="utf-8")
    seg = get_segmenter(name, user_dict=path)
    assert seg.cut("使用语言模型来预测iPhone手机") == ["使用", "语言模型", "来", "预测", "iPhone手机"]
    # The default segmenter keeps its own dictionary.
    assert get_segmenter(name).cut("使用语言模型来预测iPhone手机") == ["使用", "语言", "模型", "来", "预测", "iPhone", "手机"]


def test_user_dictionary_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("好词 3 n\n坏词 x y z\n", encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_user_dict(bad)
    assert e.value.path == str(bad) and e.value.line == 2
    notutf8 = tmp_path / "gbk.txt"
    notutf8.write_bytes("词语\n".encode("utf-8") + "中文".encode("gbk"))
    with pytest.raises(UserError) as e:
        read_user_dict(notutf8)
    assert "UTF-8" in e.value.message and e.value.line == 2
    with pytest.raises(UserError, match="not found"):
        get_segmenter("jieba", user_dict=tmp_path / "missing.txt")


def test_bad_names_and_options_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown segmenter"):
        get_segmenter("thulac")
    with pytest.raises(UserError, match="model path"):
        get_segmenter("jieba", model_path=tmp_path)
    with pytest.raises(UserError, match="presegmented"):
        get_segmenter("presegmented", user_dict=tmp_path / "x.txt")


@pytest.mark.parametrize("name,module", [("ltp", "ltp"), ("pkuseg", "spacy_pkuseg")])
def test_optional_segmenters_fail_clearly(name, module, tmp_path):
    assert name in SEGMENTERS
    installed = importlib.util.find_spec(module) is not None or (
        name == "pkuseg" and importlib.util.find_spec("pkuseg") is not None)
    if not installed:
        with pytest.raises(UserError, match="pip install"):
            get_segmenter(name, model_path=tmp_path)
    else:
        with pytest.raises(UserError, match="not found"):
            get_segmenter(name, model_path=tmp_path / "no-such-model")


def test_jieba_start_up_is_silent():
    code = "from bertwwm.text.words import get_segmenter; print(get_segmenter('jieba').cut('测试'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.strip() == "['测试']"
    assert done.stderr == ""
