from bertwwm.core.errors import UserError
from bertwwm.text.tokens import (EXPECTED_IDS, VOCAB_SIZE, VocabInfo, chinese_tokenizer, check_vocab, load_vocab,
                            save_tokenizer)
import hashlib

import pytest


def test_shipped_vocab_is_googles(shared_data):
    from bertwwm.text.tokens import default_vocab_path

    assert hashlib.md5(default_vocab_path().read_bytes()).hexdigest() == "3b5b76c4aef48ecf8cb3abaafe960f09"
    assert default_vocab_path().read_bytes() == (shared_data / "vocab/bert-base-chinese-vocab.txt").read_bytes()


def test_tokenizer_size_and_ids():
    tok = chinese_tokenizer()
    assert len(tok) == VOCAB_SIZE
    for token, i in EXPECTED_IDS.items():
        assert tok.convert_tokens_to_ids(token) == i


def test_bert_chinese_normalisation():
    tok = chinese_tokenizer()
    # lower-casing + accent stripping, CJK split, control characters dropped, English WordPiece
    assert tok.tokenize("Café\x07语言模型probability") == ["cafe", "语", "言", "模", "型", "pro", "##ba", "##bility"]


def test_saved_tokenizer_loads_with_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tmp_path)
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").count("\n") == VOCAB_SIZE
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    assert len(auto) == VOCAB_SIZE
    assert auto("的")["input_ids"] == [101, 4638, 102]


def test_vocab_info_random_ids_exclude_special_unused_and_subwords():
    vocab = load_vocab()
    inv = {i: t for t, i in vocab.items()}
    info = VocabInfo.from_vocab()
    toks = [inv[int(i)] for i in info.random_ids]
    assert not any(t.startswith("##") or t.startswith("[unused") or t in EXPECTED_IDS and t != "的" for t in toks)
    assert "的" in toks


def test_wrong_vocab_is_a_clear_error(tmp_path):
    bad = tmp_path / "vocab.txt"
    bad.write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    with pytest.raises(UserError, match="21128"):
        check_vocab(load_vocab(bad), bad)
