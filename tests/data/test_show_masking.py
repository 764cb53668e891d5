"""`bertwwm show-masking`: the report's four rows and the --json object."""

from __future__ import annotations

import json

import pytest

from bertwwm.cli import main
from bertwwm.data.show_masking import ROW_LABELS, show_masking

SENTENCE = "使用语言模型来预测下一个词的probability。"
TOKENS = ["[CLS]", "使", "用", "语", "言", "模", "型", "来", "预", "测", "下", "一", "个", "词", "的",
          "pro", "##ba", "##bility", "。", "[SEP]"]


def test_report_sentence_both_ways():
    for seed in range(20):
        result = show_masking(SENTENCE, seed=seed)
        assert result["tokens"] == TOKENS
        assert result["token_word_ids"] == [None, 0, 0, 1, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7, 8, 9, 9, 9, 10, None]
        assert result["words"] == ["使用", "语言", "模型", "来", "预测", "下", "一个", "词", "的", "probability", "。"]
        for key in ("char_masked", "wwm_masked"):
            row = result[key]
            assert len(row) == len(TOKENS) and row[0] == "[CLS]" and row[-1] == "[SEP]"
            changed = [i for i, (a, b) in enumerate(zip(TOKENS, row)) if a != b]
            assert all(row[i] == "[MASK]" for i in changed)  # [MASK] only, as in the report
            assert 1 <= len(changed) <= 3  # budget: round(0.15 * 20) = 3
        assert sum(t == "[MASK]" for t in result["char_masked"]) == 3
        ids = result["token_word_ids"]
        for word in set(ids) - {None}:  # whole words under wwm
            masked = {result["wwm_masked"][i] == "[MASK]" for i, w in enumerate(ids) if w == word}
            assert len(masked) == 1
    assert show_masking(SENTENCE, seed=4) == show_masking(SENTENCE, seed=4)


def test_cli_rows(capsys):
    assert main(["show-masking", SENTENCE, "--seed", "2"]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert [line.split("  ")[0] for line in lines] == list(ROW_LABELS)
    assert lines[0].endswith(SENTENCE)
    assert lines[1].endswith("使用 语言 模型 来 预测 下 一个 词 的 probability 。")
    result = show_masking(SENTENCE, seed=2)
    assert lines[2].endswith(" ".join(result["char_masked"][1:-1]))
    assert lines[3].endswith(" ".join(result["wwm_masked"][1:-1]))


def test_cli_json_is_one_object_with_the_four_keys(capsys):
    assert main(["show-masking", SENTENCE, "--seed", "7", "--json"]) == 0
    out = capsys.readouterr().out
    obj = json.loads(out)
    assert list(obj) == ["tokens", "token_word_ids", "char_masked", "wwm_masked"]
    assert obj["tokens"] == TOKENS
    expected = show_masking(SENTENCE, seed=7)
    assert all(obj[k] == expected[k] for k in obj)
    assert "使" in out  # not \u-escaped


def test_segmenter_choice_and_user_dict(tmp_path, capsys):
    result = show_masking("使用 语言模型", seed=0, segmenter="presegmented")
    assert result["token_word_ids"] == [None, 0, 0, 1, 1, 1, 1, None]
    path = tmp_path / "dict.txt"
    path.write_text("语言模型\n", encoding="utf-8")
    assert main(["show-masking", "使用语言模型", "--user-dict", str(path), "--json", "--seed", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["token_word_ids"] == [None, 0, 0, 1, 1, 1, 1, None]


@pytest.mark.parametrize("argv,message", [
    (["show-masking", "   "], "TEXT is empty"),
    (["show-masking", "\x00"], "has no tokens"),
    (["show-masking", "好", "--user-dict", "/no/such/dict.txt"], "not found"),
    (["show-masking", "好", "--max-predictions", "0"], "at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_macbert_row_with_a_similar_words_table(tmp_path, capsys):
    from bertwwm.data.show_masking import MACBERT_LABEL
    from bertwwm.data.similar_words import SimilarWords
    from bertwwm.text.tokens import load_vocab

    vocab = load_vocab()
    ids = {w: tuple(vocab[c] for c in w) for w in ("使用", "利用", "语言", "文字")}
    table = SimilarWords([ids["使用"], ids["利用"], ids["语言"], ids["文字"]], [[1], [0], [3], [2]],
                         ["使用", "利用", "语言", "文字"], vocab_size=len(vocab))
    path = tmp_path / "similar.json"
    table.save(path)
    seen = set()
    for seed in range(30):
        result = show_masking(SENTENCE, seed=seed, similar_words=table)
        plain = show_masking(SENTENCE, seed=seed)
        assert all(result[k] == plain[k] for k in plain)  # the other rows do not change
        row = result["macbert_masked"]
        changed = [i for i, (a, b) in enumerate(zip(TOKENS, row)) if a != b]
        assert "[MASK]" not in row and 1 <= len(changed) <= 3
        seen.add(" ".join(row[1:5]))
    assert {"利 用 语 言", "使 用 文 字"} & seen  # table words replaced by their neighbour, whole
    assert main(["show-masking", SENTENCE, "--seed", "3", "--similar-words", str(path)]) == 0
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 5 and lines[4].startswith(MACBERT_LABEL)
    assert lines[4].endswith(" ".join(show_masking(SENTENCE, seed=3, similar_words=table)["macbert_masked"][1:-1]))
    assert main(["show-masking", SENTENCE, "--seed", "3", "--similar-words", str(path), "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out))[-1] == "macbert_masked"
    assert main(["show-masking", SENTENCE, "--similar-words", str(tmp_path / "missing.json")]) == 2
    assert "similar-words table not found" in capsys.readouterr().err
