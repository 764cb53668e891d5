"""HFL's legacy pytorch_model.bin (LayerNorm gamma/beta, prefixes, bert_config.json) loads into transformers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForPreTraining, BertConfig, BertForPreTraining

from bertwwm.cli import main
from bertwwm.convert import convert_legacy_folder, rename_legacy_state_dict
from bertwwm.convert.legacy import legacy_name, needs_renaming
from bertwwm.core.errors import UserError
from bertwwm.text.tokens import default_vocab_path


def _fresh_model(seed=0):
    config = BertConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64, hidden_act="gelu")
    torch.manual_seed(seed)
    return BertForPreTraining(config).eval()


def _old_name(key: str) -> str:
    # What pytorch-pretrained-BERT called the parameters.
    if ".LayerNorm." in key:
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return key


def _legacy_folder(tmp_path, model, state, *, legacy_serialization=False):
    folder = tmp_path / "legacy"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin", _use_new_zipfile_serialization=not legacy_serialization)
    c = model.config
    (folder / "bert_config.json").write_text(json.dumps({
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": c.hidden_size, "initializer_range": 0.02, "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings, "num_attention_heads": c.num_attention_heads,
        "num_hidden_layers": c.num_hidden_layers, "type_vocab_size": 2, "vocab_size": c.vocab_size}))
    (folder / "vocab.txt").write_bytes(default_vocab_path().read_bytes())
    return folder


def _logits(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def test_legacy_names_load_and_give_the_same_outputs(tmp_path, capsys):
    model = _fresh_model()
    old = {_old_name(k): v for k, v in model.state_dict().items() if k != "bert.embeddings.position_ids"}
    assert any(k.endswith("LayerNorm.gamma") for k in old)
    folder = _legacy_folder(tmp_path, model, old, legacy_serialization=True)
    assert main(["convert", "legacy-bin", str(folder), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    n_layernorm = 2 * (1 + 2 * 2 + 1)  # embeddings, 2 per layer, MLM transform; weight and bias each
    assert f"renamed {n_layernorm}:" in printed and "LayerNorm.gamma -> " in printed
    loaded = AutoModelForPreTraining.from_pretrained(str(tmp_path / "out")).eval()
    ids = torch.tensor([[101, 2769, 4263, 1266, 776, 102]])
    for ours, theirs in zip(_logits(loaded, ids), _logits(model, ids)):
        np.testing.assert_array_equal(ours, theirs)
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "LayerNorm.gamma" in readme and "gelu" in readme


def test_bert_model_keys_with_dataparallel_prefix_and_a_task_head(tmp_path):
    model = _fresh_model(1)
    old = {"module." + _old_name(k[len("bert."):]): v for k, v in model.state_dict().items()
           if k.startswith("bert.") and k != "bert.embeddings.position_ids"}
    old["module.classifier.weight"] = torch.zeros(3, 32)
    arrays, report = rename_legacy_state_dict(old, model.config)
    assert report.ignored == ["module.classifier.weight"]
    assert report.renamed["module.embeddings.LayerNorm.gamma"] == "bert.embeddings.LayerNorm.weight"
    assert all(n.startswith("cls.") for n in report.missing)
    folder = _legacy_folder(tmp_path, model, old)
    convert_legacy_folder(folder, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(str(tmp_path / "out")).eval()
    ids = torch.tensor([[101, 2769, 102]])
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(input_ids=ids).last_hidden_state.numpy(),
                                      model.bert(input_ids=ids).last_hidden_state.numpy())


def test_name_rules():
    assert legacy_name("bert.embeddings.LayerNorm.gamma") == "bert.embeddings.LayerNorm.weight"
    assert legacy_name("roberta.encoder.layer.0.output.LayerNorm.beta") == "bert.encoder.layer.0.output.LayerNorm.bias"
    assert legacy_name("encoder.layer.0.output.dense.weight") == "bert.encoder.layer.0.output.dense.weight"
    assert legacy_name("cls.predictions.bias") == "cls.predictions.bias"
    assert not needs_renaming(["bert.embeddings.LayerNorm.weight", "cls.predictions.bias"])
    assert not needs_renaming(["embeddings.LayerNorm.weight"])  # a current BertModel file
    assert needs_renaming(["bert.embeddings.LayerNorm.gamma"])
    assert needs_renaming(["module.bert.embeddings.word_embeddings.weight"])


def test_wrong_config_and_corrupt_files_are_errors_without_output(tmp_path, capsys):
    model = _fresh_model()
    folder = _legacy_folder(tmp_path, model, {_old_name(k): v for k, v in model.state_dict().items()})
    config = json.loads((folder / "bert_config.json").read_text())
    (folder / "bert_config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    assert main(["convert", "legacy-bin", str(folder), str(tmp_path / "out")]) == 2
    assert "the config does not match the weights" in capsys.readouterr().err
    (folder / "bert_config.json").write_text(json.dumps(config))
    raw = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="cannot read PyTorch weights"):
        convert_legacy_folder(folder, tmp_path / "out")
    (folder / "pytorch_model.bin").write_bytes(raw)
    (folder / "vocab.txt").unlink()
    with pytest.raises(UserError, match="vocab.txt not found"):
        convert_legacy_folder(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
