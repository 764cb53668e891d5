"""`bertwwm inspect`: statistics and decoded instances with masked words marked."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bertwwm.cli import main
from bertwwm.data.inspect_data import decode_item, inspect, inspect_dataset, join_tokens, render
from bertwwm.data.prepare import prepare
from bertwwm.data.storage import PreparedDataset
from bertwwm.text.tokens import chinese_tokenizer


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    text = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").split("\n\n")[:80]
    src = root / "clue.txt"
    src.write_text("\n\n".join(text) + "\n", encoding="utf-8")
    prepare(src, root / "static", segmenter="rjieba", dupe_factor=2, progress=False)
    prepare(src, root / "dynamic", segmenter="rjieba", dynamic=True, nsp=False, progress=False)
    return root


def _plain(ids) -> str:
    """Independent decoding: the tokenizer's own decode ([UNK] kept), compared without spaces."""
    return chinese_tokenizer().decode([int(i) for i in ids], skip_special_tokens=False).replace(" ", "")


def test_masked_words_are_marked_with_original_and_given_tokens(prepared):
    ds = PreparedDataset(prepared / "static")
    vocab_tokens = chinese_tokenizer().convert_ids_to_tokens
    for i in range(0, len(ds), max(1, len(ds) // 40)):
        item = ds[i]
        d = decode_item(item, i)
        chosen = item["labels"] != -100
        assert d.num_masked == int(chosen.sum()) >= 1
        assert d.next_sentence_label == item["next_sentence_label"]
        assert len(d.segments) == 2
        # Replacing each 【original→given】 by the original gives back the unmasked segments.
        original = item["input_ids"].copy()
        original[chosen] = item["labels"][chosen]
        b = int(np.argmax(item["token_type_ids"]))
        unmarked = [re.sub(r"【(.*?)→.*?】", r"\1", s) for s in d.segments]
        assert [u.replace(" ", "") for u in unmarked] == [_plain(original[1:b - 1]), _plain(original[b:-1])]
        # and what the model is given is exactly the masked input ids at those positions
        given = "".join(g for _, g in d.masked_words)
        assert given == "".join(vocab_tokens([int(t) for t in item["input_ids"][chosen]]))


def test_dynamic_instances_show_word_boundaries(prepared):
    ds = PreparedDataset(prepared / "dynamic")
    d = decode_item(ds[0])
    assert d.next_sentence_label is None and d.num_masked == 0
    words = d.segments[0].split(" ")
    starts = ds[0]["word_starts"]
    # one displayed word per word start between [CLS] and the first [SEP]
    first_sep = int(np.flatnonzero(ds[0]["input_ids"] == 102)[0])
    assert len(words) == int(starts[1:first_sep].sum())


def test_join_tokens():
    assert join_tokens(["使", "用", "iphone", "##13", "手", "机", "2019", "年", "ok", "##ay"]) == "使用iphone13手机2019年okay"
    assert join_tokens(["hello", "world", "。"]) == "hello world。"


def test_summary_and_render(prepared):
    info, decoded = inspect(prepared / "static", n=2, start=1)
    assert [d.index for d in decoded] == [1, 2]
    assert info["masking"] == "static" and info["dupe_factor"] == 2 and info["segmenter"] == "rjieba"
    assert 0.3 < info["nsp_random_share"] < 0.9
    text = render(info, decoded)
    assert f"{info['counts']['instances']:,} instances" in text
    assert "A: " in text and "B: " in text and "NSP:" in text and "【" in text
    assert inspect_dataset(prepared / "static", n=2, start=1) == text


def test_cli_text_and_json(prepared, capsys):
    assert main(["inspect", str(prepared / "static"), "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "bert-pairs" in out and "#0" in out and "#1" not in out
    assert main(["inspect", str(prepared / "dynamic"), "-n", "2", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["masking"] == "dynamic" and len(obj["instances"]) == 2
    assert obj["instances"][0]["next_sentence_label"] is None


def test_cli_errors_exit_2(tmp_path, prepared, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
    assert main(["inspect", str(prepared / "static"), "--start", "10000000"]) == 2
    assert "out of range" in capsys.readouterr().err
