"""MLM-head integrity: the check fires on a fresh or missing head and stays quiet once the head has trained;
head warm-up trains the head alone."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import torch

from bertwwm.cli import main
from bertwwm.modeling.head_check import (_corpus_path, check_mlm_head, checkpoint_has_mlm_head, freeze_body_grads,
                                probe_batch, probe_mlm_head)
from bertwwm.modeling.model import PretrainingModel, bert_config, build_model, save_model
from bertwwm.text.tokens import MASK_ID, UNK_ID, load_vocab


def _tiny(seed: int = 0, nsp: bool = False):
    torch.manual_seed(seed)
    return build_model(bert_config("tiny", hidden_size=64, intermediate_size=128), nsp=nsp)


def _training_ids() -> np.ndarray:
    """Law text from far past the probe's lines, as character ids (what the probe reads is not trained on)."""
    vocab = load_vocab()
    lines = gzip.open(_corpus_path(), "rt", encoding="utf-8").read().split("\n")[2000:2400]
    return np.array([vocab.get(c, UNK_ID) for line in lines for c in line.lower() if not c.isspace()])


def test_probe_is_a_few_hundred_masked_tokens_of_the_shipped_corpus():
    inputs, labels = probe_batch()
    masked = labels != -100
    assert inputs.shape == (3, 128) and 40 <= masked.sum() <= 60
    assert (inputs[masked] == MASK_ID).all() and (labels[masked] != UNK_ID).all()


@pytest.mark.slow
def test_fires_on_a_fresh_head_and_is_quiet_after_head_warmup():
    model = PretrainingModel(_tiny())
    before = probe_mlm_head(model)
    assert before.status == "untrained" and before.loss > 0.9 * before.uniform_loss
    body = {k: v.detach().clone() for k, v in model.hf.named_parameters() if not k.startswith("cls.")}

    ids = _training_ids()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.01)
    for _ in range(80):
        starts = rng.integers(0, len(ids) - 64, 8)
        x = torch.from_numpy(np.stack([ids[s:s + 64] for s in starts]))
        chosen = torch.rand(x.shape, generator=gen) < 0.15
        labels = torch.where(chosen, x, torch.full_like(x, -100))
        model(x.masked_fill(chosen, MASK_ID), labels=labels).loss.backward()
        freeze_body_grads(model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    after = probe_mlm_head(model)
    assert after.status == "ok" and after.loss < before.loss - 1.0, after
    for k, v in model.hf.named_parameters():  # weight decay included: nothing outside the head moved
        if k in body:
            assert torch.equal(v, body[k]), k
    assert not torch.equal(model.hf.cls.predictions.bias, torch.zeros_like(model.hf.cls.predictions.bias))
    stream = io.StringIO()
    assert check_mlm_head(model, None, "fill-mask", stream=stream).ok and stream.getvalue() == ""


def test_missing_head_is_reported_from_the_checkpoint_keys(tmp_path):
    from transformers import BertForMaskedLM, BertModel

    torch.manual_seed(0)
    encoder_only = BertModel(bert_config("tiny", hidden_size=32, intermediate_size=64))
    encoder_only.save_pretrained(tmp_path / "encoder")
    save_model(_tiny(), tmp_path / "full")
    assert checkpoint_has_mlm_head(tmp_path / "encoder") is False
    assert checkpoint_has_mlm_head(tmp_path / "full") is True
    model = BertForMaskedLM.from_pretrained(tmp_path / "encoder")
    stream = io.StringIO()
    report = check_mlm_head(model, tmp_path / "encoder", "fill-mask", stream=stream)
    line = stream.getvalue()
    assert report.status == "missing" and line.count("\n") == 1
    assert line.startswith("bertwwm fill-mask: warning: the MLM head is missing") and "pretrain --init" in line


@pytest.mark.parametrize("verb", ["fill-mask", "convert"])
def test_cli_verbs_say_it_in_one_line(verb, tiny_tf, tmp_path, capsys, private_cache):
    # The shared TF checkpoint is a genuine BERT checkpoint with random weights: its head is untrained.
    if verb == "fill-mask":
        assert main(["fill-mask", str(tiny_tf), "中华人民共和[MASK]"]) == 0
    else:
        assert main(["convert", "tf-to-hf", str(tiny_tf), str(tmp_path / "hf")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"bertwwm {verb}: warning: the MLM head looks untrained")
