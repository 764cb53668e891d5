"""`bertwwm vocab extend`: new rows for what the corpus needs, identical outputs for old-vocabulary inputs,
and a folder that plain transformers, prepare and pretrain use unchanged."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bertwwm.cli import main
from bertwwm.text.tokens import VOCAB_SIZE
from bertwwm.modeling.vocab_extend import extend_vocab

CORPUS = Path(__file__).resolve().parents[2] / "src" / "bertwwm" / "resources" / "corpus" / "prc-laws-sample.txt.gz"


def _tiny_model(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    from bertwwm.modeling.model import bert_config, build_model, save_model

    torch.manual_seed(seed)
    save_model(build_model(bert_config("tiny", hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                       num_attention_heads=2), nsp=True), folder)
    return folder


@pytest.fixture(scope="module")
def law_slice(tmp_path_factory) -> Path:
    """2,000 lines of the shipped law corpus: it has curly quotes (not in Google's vocabulary) and rare characters."""
    lines = gzip.open(CORPUS, "rt", encoding="utf-8").read().split("\n")[:2000]
    path = tmp_path_factory.mktemp("corpus") / "laws.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def extended(law_slice, tmp_path_factory):
    root = tmp_path_factory.mktemp("extend")
    base = _tiny_model(root / "base")
    report = extend_vocab([law_slice], str(base), root / "ext", min_count=1)
    return base, root / "ext", report


def test_new_tokens_get_rows_and_the_tokenizer_uses_them(extended):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    base, ext, report = extended
    added = [a["token"] for a in report.added]
    assert added[:2] == ["“", "”"]  # the most frequent [UNK]s of Chinese law text
    assert report.unk_before > 0 and report.unk_after == 0
    n = VOCAB_SIZE + len(added)
    tok = AutoTokenizer.from_pretrained(str(ext))  # plain transformers, no bertwwm code
    assert len(tok) == n == report.new_size
    assert tok("“法”", add_special_tokens=False)["input_ids"] == [VOCAB_SIZE, 3791, VOCAB_SIZE + 1]
    model = AutoModelForMaskedLM.from_pretrained(str(ext))
    assert model.config.vocab_size == n
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == n and model.cls.predictions.bias.shape[0] == n
    assert model.cls.predictions.decoder.weight.data_ptr() == emb.data_ptr()  # still tied
    # New characters start at the mean of the real (non-special) old rows.
    torch.testing.assert_close(emb[VOCAB_SIZE], emb[106:VOCAB_SIZE].mean(0))
    assert json.loads((ext / "vocab_extension.json").read_text())["new_size"] == n
    lines = (ext / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines[:VOCAB_SIZE] == (base / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines[VOCAB_SIZE:] == added


def test_old_vocabulary_inputs_give_identical_outputs(extended):
    from transformers import AutoModelForMaskedLM

    base, ext, _ = extended
    old = AutoModelForMaskedLM.from_pretrained(str(base)).eval()
    new = AutoModelForMaskedLM.from_pretrained(str(ext)).eval()
    ids = torch.randint(106, VOCAB_SIZE, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = old(ids).logits, new(ids).logits
    assert torch.equal(a, b[..., :VOCAB_SIZE])
    assert b.shape[-1] > VOCAB_SIZE


def test_prepare_and_pretrain_use_the_extended_vocabulary(extended, law_slice, tmp_path):
    base, ext, report = extended
    data = tmp_path / "data"
    assert main(["prepare", str(law_slice), "--out", str(data), "--vocab", str(ext), "--max-seq-length", "64",
                 "--dynamic", "--quiet"]) == 0
    from bertwwm.data.storage import PreparedDataset

    ds = PreparedDataset(data)
    ids = np.concatenate([ds[i]["input_ids"] for i in range(len(ds))])
    assert (ids >= VOCAB_SIZE).sum() > 0 and ids.max() < report.new_size
    assert main(["pretrain", "--recipe", "tiny-cpu", "--init", str(ext), "--data", str(data), "--out",
                 str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--threads", "1",
                 "--no-progress"]) == 0
    final = tmp_path / "run" / "final"
    assert json.loads((final / "config.json").read_text())["vocab_size"] == report.new_size
    assert (final / "vocab.txt").read_text(encoding="utf-8") == (ext / "vocab.txt").read_text(encoding="utf-8")
    from bertwwm.tasks.heads import load_tokenizer  # what finetune reads

    assert len(load_tokenizer(str(final))) == report.new_size


def test_data_and_model_vocabularies_must_match(extended, law_slice, tmp_path, capsys):
    base, ext, _ = extended
    data = tmp_path / "data"
    assert main(["prepare", str(law_slice), "--out", str(data), "--max-seq-length", "64", "--dynamic",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["pretrain", "--recipe", "tiny-cpu", "--init", str(ext), "--data", str(data), "--out",
                 str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "prepare it with --vocab" in err[-1] and "Traceback" not in "\n".join(err)


def test_words_and_a_user_file(law_slice, tmp_path):
    base = _tiny_model(tmp_path / "base")
    corpus = tmp_path / "c.txt"
    corpus.write_text("新冠病毒covid疫苗。\n" * 3 + "簖\n", encoding="utf-8")
    wanted = tmp_path / "add.txt"
    wanted.write_text("鳏\n##qzx\n的\n", encoding="utf-8")  # 的 is there already: skipped
    report = extend_vocab([corpus], str(base), tmp_path / "ext", min_count=3, add_file=wanted, words=True)
    assert [(a["token"], a["source"]) for a in report.added] == [("鳏", "file"), ("##qzx", "file"),
                                                                 ("covid", "word")]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "ext"))
    assert tok.tokenize("COVID疫苗") == ["covid", "疫", "苗"]


def _one_line_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line(tmp_path, capsys):
    base = _tiny_model(tmp_path / "base")
    plain = tmp_path / "plain.txt"
    plain.write_text("中华人民共和国宪法。\n公民的基本权利和义务。\n", encoding="utf-8")
    err = _one_line_error(["vocab", "extend", str(plain), "--model", str(base), "--out", str(tmp_path / "o")], capsys)
    assert err.startswith(f"bertwwm vocab: error: {plain}: nothing to add")
    words = tmp_path / "words.txt"
    words.write_text("鳏\n法院\n", encoding="utf-8")
    err = _one_line_error(["vocab", "extend", str(plain), "--model", str(base), "--out", str(tmp_path / "o"),
                           "--add", str(words)], capsys)
    assert f"{words}:2:" in err and "add the characters instead" in err
    assert not (tmp_path / "o").exists()
