"""`bertwwm convert ...` end to end on the TF-1 checkpoint TensorFlow wrote, and its failure modes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from bertwwm.cli import main
from bertwwm.convert import hf_to_tf, tf_to_hf
from bertwwm.core.errors import UserError

pytestmark = pytest.mark.usefixtures("private_cache")


def _outputs(folder, ref):
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ref["input_ids"]).long(),
                    attention_mask=torch.from_numpy(ref["attention_mask"]).long(),
                    token_type_ids=torch.from_numpy(ref["token_type_ids"]).long(), output_hidden_states=True)
        sequence = out.hidden_states[-1]
        pooled = model.bert.pooler(sequence)
    return {"sequence_output": sequence.numpy(), "pooled_output": pooled.numpy(),
            "mlm_logits": out.prediction_logits.numpy(), "nsp_logits": out.seq_relationship_logits.numpy()}


def test_tf_to_hf_reproduces_tensorflows_outputs(tiny_tf, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["convert", "tf-to-hf", str(tiny_tf), str(out)]) == 0
    assert "converted 46 tensors" in capsys.readouterr().out
    ref = np.load(tiny_tf / "reference_outputs.npz")
    ours = _outputs(out, ref)
    for key in ("sequence_output", "pooled_output", "mlm_logits", "nsp_logits"):
        assert ours[key].shape == ref[key].shape
        np.testing.assert_allclose(ours[key], ref[key], atol=1e-4, rtol=0, err_msg=key)
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_act"] == "gelu_new" and config["model_type"] == "bert"
    assert "gelu_new" in (out / "README.md").read_text()
    # Exact-erf GELU would not be faithful: the same weights miss the reference by more than the tolerance.
    config["hidden_act"] = "gelu"
    (out / "config.json").write_text(json.dumps(config))
    assert np.abs(_outputs(out, ref)["mlm_logits"] - ref["mlm_logits"]).max() > 1e-4


def test_converted_folder_is_a_standard_hf_folder(tiny_tf, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    out = tmp_path / "hf"
    tf_to_hf(tiny_tf / "bert_model.ckpt.index", out)  # the .index file works as well as the folder
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
            "README.md"} <= {p.name for p in out.iterdir()}
    tok = AutoTokenizer.from_pretrained(str(out))
    assert len(tok) == 21128
    lines = (tiny_tf / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert tok("使用全词掩码")["input_ids"] == [101, *(lines.index(c) for c in "使用全词掩码"), 102]
    model = AutoModel.from_pretrained(str(out))
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2


def test_hf_to_tf_to_hf_round_trip_gives_identical_tensors(tiny_tf, tmp_path):
    hf1, tf, hf2 = tmp_path / "hf1", tmp_path / "tf", tmp_path / "hf2"
    tf_to_hf(tiny_tf, hf1)
    assert main(["convert", "hf-to-tf", str(hf1), str(tf)]) == 0
    assert main(["convert", "tf-to-hf", str(tf), str(hf2)]) == 0
    a, b = load_file(str(hf1 / "model.safetensors")), load_file(str(hf2 / "model.safetensors"))
    assert sorted(a) == sorted(b) and len(a) == 46
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    # The TF side is what TensorFlow itself wrote, to the byte.
    for name in ("bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "vocab.txt"):
        assert (tf / name).read_bytes() == (tiny_tf / name).read_bytes(), name
    assert json.loads((tf / "bert_config.json").read_text()) == json.loads((tiny_tf / "bert_config.json").read_text())
    assert 'model_checkpoint_path: "bert_model.ckpt"' in (tf / "checkpoint").read_text()


def test_hf_to_tf_of_a_fresh_model_round_trips(tmp_path):
    from transformers import BertConfig, BertForPreTraining

    from bertwwm.text.tokens import save_tokenizer

    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=48, hidden_act="gelu")
    torch.manual_seed(0)
    model = BertForPreTraining(config)
    model.save_pretrained(str(tmp_path / "src"))
    save_tokenizer(tmp_path / "src")
    report = hf_to_tf(tmp_path / "src", tmp_path / "tf")
    assert report.converted == 5 + 16 + 2 + 5 + 2
    assert "exact-erf" in (tmp_path / "tf" / "README.md").read_text()
    tf_to_hf(tmp_path / "tf", tmp_path / "back")
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    original = {k: v.numpy() for k, v in model.state_dict().items()}
    for key, value in back.items():
        assert np.array_equal(value, original[key]), key


def _fails(argv, capsys, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert pattern in err, err


def test_truncated_data_file_gives_an_error_and_no_output(tiny_copy, tmp_path, capsys):
    data = tiny_copy / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:4096])
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys, "truncated checkpoint data file")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp folders left behind either


def test_flipped_index_bytes_give_an_error_and_no_output(tiny_copy, tmp_path, capsys):
    index = tiny_copy / "bert_model.ckpt.index"
    raw = bytearray(index.read_bytes())
    raw[200] ^= 0x10
    index.write_bytes(bytes(raw))
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys, "checksum mismatch")
    assert not (tmp_path / "out").exists()


def test_corrupt_tensor_bytes_give_an_error_and_no_output(tiny_copy, tmp_path, capsys):
    data = tiny_copy / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[-300] ^= 0x01
    data.write_bytes(bytes(raw))
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys,
           "checksum mismatch for tensor 'cls/seq_relationship/output_weights'")
    assert not (tmp_path / "out").exists()


def test_wrong_config_gives_an_error_and_no_output(tiny_copy, tmp_path, capsys):
    path = tiny_copy / "bert_config.json"
    config = json.loads(path.read_text())
    config["num_attention_heads"] = 4
    config["hidden_size"] = 128
    path.write_text(json.dumps(config))
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys,
           "the config does not match the checkpoint")
    assert not (tmp_path / "out").exists()
    config["hidden_size"] = 66  # not a multiple of the 4 heads
    path.write_text(json.dumps(config))
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys, "not a multiple")


def test_missing_vocab_or_config_give_errors_and_no_output(tiny_copy, tmp_path, capsys):
    (tiny_copy / "vocab.txt").rename(tmp_path / "vocab.txt")
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys, "vocab.txt not found")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    shutil.copy(tmp_path / "vocab.txt", tiny_copy / "vocab.txt")
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys,
           "vocab.txt has 2 entries but the config says vocab_size 21128")
    (tiny_copy / "bert_config.json").unlink()
    _fails(["convert", "tf-to-hf", str(tiny_copy), str(tmp_path / "out")], capsys, "bert_config.json not found")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_kept_unless_forced(tiny_tf, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    _fails(["convert", "tf-to-hf", str(tiny_tf), str(out)], capsys, "pass --force")
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["convert", "tf-to-hf", str(tiny_tf), str(out), "--force"]) == 0
    assert (out / "config.json").is_file() and not (out / "keep.txt").exists()


def test_no_checkpoint_and_missing_paths(tmp_path, capsys):
    _fails(["convert", "tf-to-hf", str(tmp_path), str(tmp_path / "o")], capsys, "no TF checkpoint here")
    _fails(["convert", "tf-to-hf", str(tmp_path / "nope"), str(tmp_path / "o")], capsys, "no such checkpoint")
    _fails(["convert", "hf-to-tf", str(tmp_path / "nope"), str(tmp_path / "o")], capsys, "no such local folder or file")
    with pytest.raises(UserError, match="no model found"):
        hf_to_tf(tmp_path, tmp_path / "o")
    with pytest.raises(UserError, match="not a local model folder"):  # zoo names: the zoo resolves them first
        hf_to_tf("bert-wwm", tmp_path / "o")


def test_a_non_chinese_vocabulary_is_copied_and_gets_its_own_tokenizer(tmp_path, capsys):
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "World", "##s", "中", "文", "The"]
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertForPreTraining(config).save_pretrained(str(tmp_path / "src"))
    (tmp_path / "src" / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    assert main(["convert", "hf-to-tf", str(tmp_path / "src"), str(tmp_path / "tf")]) == 0
    assert (tmp_path / "tf" / "vocab.txt").read_text(encoding="utf-8").split() == vocab
    assert main(["convert", "tf-to-hf", str(tmp_path / "tf"), str(tmp_path / "hf")]) == 0
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert len(tok) == len(vocab)
    # A cased vocabulary (capitalised words present) keeps case; Chinese characters are split off.
    assert tok.convert_ids_to_tokens(tok("Hello Worlds中文")["input_ids"]) == [
        "[CLS]", "Hello", "World", "##s", "中", "文", "[SEP]"]
    assert main(["convert", "tf-to-hf", "--lower-case", str(tmp_path / "tf"), str(tmp_path / "hf2")]) == 0
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "hf2"))
    assert tok.convert_ids_to_tokens(tok("Hello")["input_ids"]) == ["[CLS]", "hello", "[SEP]"]


def test_tf_to_hf_accepts_the_released_zip(tiny_tf, tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("BERTWWM_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "chinese_wwm_L-2_H-64_A-2.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"):
            zf.write(tiny_tf / name, f"chinese_wwm_L-2_H-64_A-2/{name}")
    assert main(["convert", "tf-to-hf", str(archive), str(tmp_path / "hf")]) == 0
    ref = np.load(tiny_tf / "reference_outputs.npz")
    np.testing.assert_allclose(_outputs(tmp_path / "hf", ref)["nsp_logits"], ref["nsp_logits"], atol=1e-4, rtol=0)
