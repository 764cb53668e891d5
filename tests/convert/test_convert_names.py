"""Google's TF variable names <-> transformers BertForPreTraining names."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import BertConfig, BertForPreTraining

from bertwwm.convert import names
from bertwwm.convert.tf_checkpoint import CheckpointReader
from bertwwm.core.errors import UserError


def _tiny_config(**kw):
    return BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=12, max_position_embeddings=16, **kw)


def test_every_stored_parameter_of_bert_for_pretraining_maps_both_ways():
    config = _tiny_config()
    state = BertForPreTraining(config).state_dict()
    stored = [k for k in state if k not in names.HF_DERIVED]
    assert set(stored) == set(names.expected_shapes(config))
    for key in stored:
        assert tuple(state[key].shape) == names.expected_shapes(config)[key]
        tf_name, transpose = names.hf_to_tf_name(key)
        assert names.tf_to_hf_name(tf_name) == (key, transpose)
        assert transpose == tf_name.endswith("/kernel")
    assert names.hf_to_tf_name("bert.encoder.layer.1.output.LayerNorm.weight") == (
        "bert/encoder/layer_1/output/LayerNorm/gamma", False)
    assert names.hf_to_tf_name("cls.seq_relationship.weight") == ("cls/seq_relationship/output_weights", False)
    assert names.hf_to_tf_name("cls.predictions.decoder.weight") is None  # tied to the word embeddings


def test_fixture_variables_map_onto_the_model_with_kernels_transposed(shared_data):
    from bertwwm.convert import read_tf_bert_config

    folder = shared_data / "checkpoints" / "tiny-bert-tf"
    tensors = CheckpointReader(folder / "bert_model.ckpt").read_all()
    config = read_tf_bert_config(folder / "bert_config.json")
    state, report = names.tf_to_state_dict(tensors, config)
    assert report.converted == len(tensors) == len(state)
    assert not report.ignored and not report.skipped_training_state and not report.missing
    kernel = tensors["bert/encoder/layer_0/intermediate/dense/kernel"]
    assert np.array_equal(state["bert.encoder.layer.0.intermediate.dense.weight"], kernel.T)
    assert np.array_equal(state["cls.seq_relationship.weight"], tensors["cls/seq_relationship/output_weights"])
    assert np.array_equal(state["cls.predictions.bias"], tensors["cls/predictions/output_bias"])
    # and back again, exactly
    back, _ = names.state_dict_to_tf(state, config)
    assert sorted(back) == sorted(tensors)
    assert all(np.array_equal(back[k], tensors[k]) for k in tensors)


def test_optimiser_slots_and_task_heads_are_skipped_and_reported(shared_data):
    from bertwwm.convert import read_tf_bert_config

    folder = shared_data / "checkpoints" / "tiny-bert-tf"
    tensors = CheckpointReader(folder / "bert_model.ckpt").read_all()
    config = read_tf_bert_config(folder / "bert_config.json")
    extra = {
        "global_step": np.array(1000000, dtype=np.int64),
        "bert/pooler/dense/kernel/adam_m": np.zeros((64, 64), np.float32),
        "bert/pooler/dense/kernel/adam_v": np.zeros((64, 64), np.float32),
        "bert/embeddings/word_embeddings/lamb_m": np.zeros((3,), np.float32),
        "output_weights": np.zeros((3, 64), np.float32),  # run_classifier.py's head
        "output_bias": np.zeros((3,), np.float32),
    }
    state, report = names.tf_to_state_dict({**tensors, **extra}, config)
    assert len(state) == len(tensors)
    assert sorted(report.skipped_training_state) == sorted(
        ["global_step", "bert/pooler/dense/kernel/adam_m", "bert/pooler/dense/kernel/adam_v",
         "bert/embeddings/word_embeddings/lamb_m"])
    assert report.ignored == ["output_bias", "output_weights"]
    assert "skipped 4 optimiser" in report.summary()


def test_shape_mismatch_names_the_variable_and_the_config(shared_data):
    folder = shared_data / "checkpoints" / "tiny-bert-tf"
    tensors = CheckpointReader(folder / "bert_model.ckpt").read_all()
    wrong = BertConfig(vocab_size=21128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=256)
    with pytest.raises(UserError, match=r"layer_0/intermediate/dense/bias has shape \(128,\).*implies \(256,\)"):
        names.tf_to_state_dict(tensors, wrong)


def test_missing_variables_are_an_error(shared_data):
    from bertwwm.convert import read_tf_bert_config

    folder = shared_data / "checkpoints" / "tiny-bert-tf"
    tensors = CheckpointReader(folder / "bert_model.ckpt").read_all()
    config = read_tf_bert_config(folder / "bert_config.json")
    del tensors["bert/encoder/layer_1/attention/self/key/kernel"]
    with pytest.raises(UserError, match="lacks 1 variables.*layer_1/attention/self/key/kernel"):
        names.tf_to_state_dict(tensors, config)
    config3 = read_tf_bert_config(folder / "bert_config.json")
    config3.num_hidden_layers = 3  # a config promising more layers than the checkpoint has
    with pytest.raises(UserError, match="layer_2"):
        names.tf_to_state_dict(CheckpointReader(folder / "bert_model.ckpt").read_all(), config3)


def test_training_state_pattern_does_not_swallow_model_variables():
    for name in ("bert/embeddings/LayerNorm/beta", "cls/predictions/output_bias", "bert/pooler/dense/kernel"):
        assert not names.is_training_state(name)
    for name in ("global_step", "bert/pooler/dense/kernel/adam_v", "beta1_power", "loss_scale"):
        assert names.is_training_state(name)


def test_a_checkpoint_without_pretraining_heads_converts_to_bert_model(shared_data, tmp_path):
    from transformers import AutoModel

    from bertwwm.convert import read_tf_bert_config, tf_to_hf
    from bertwwm.convert.tf_checkpoint import write_checkpoint

    folder = shared_data / "checkpoints" / "tiny-bert-tf"
    tensors = CheckpointReader(folder / "bert_model.ckpt").read_all()
    config = read_tf_bert_config(folder / "bert_config.json")
    encoder = {k: v for k, v in tensors.items() if not k.startswith("cls/")}
    state, report = names.tf_to_state_dict({**encoder, "output_weights": np.zeros((2, 64), np.float32)}, config)
    assert len(report.missing) == 7 and all(n.startswith("cls.") for n in report.missing)
    assert report.ignored == ["output_weights"]
    # A partial head is still an error.
    with pytest.raises(UserError, match="cls/predictions/output_bias"):
        names.tf_to_state_dict({**encoder, "cls/seq_relationship/output_weights": tensors[
            "cls/seq_relationship/output_weights"], "cls/seq_relationship/output_bias": tensors[
            "cls/seq_relationship/output_bias"]}, config)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_checkpoint(ckpt / "bert_model.ckpt", encoder)
    for name in ("bert_config.json", "vocab.txt"):
        (ckpt / name).write_bytes((folder / name).read_bytes())
    tf_to_hf(ckpt, tmp_path / "hf")
    model = AutoModel.from_pretrained(str(tmp_path / "hf"))
    assert model.config.architectures == ["BertModel"]
    assert np.array_equal(model.embeddings.word_embeddings.weight.detach().numpy(),
                          tensors["bert/embeddings/word_embeddings"])
    assert np.array_equal(model.pooler.dense.weight.detach().numpy(), tensors["bert/pooler/dense/kernel"].T)
