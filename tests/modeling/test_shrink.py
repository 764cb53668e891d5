"""`bertwwm shrink`: the small model is exactly the chosen layers of its source."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.modeling.model import bert_config, build_model, save_model


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(bert_config("tiny", hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                    num_attention_heads=2), nsp=True)
    folder = tmp_path_factory.mktemp("shrink") / "big"
    save_model(model, folder)
    return folder


def test_shrunk_model_is_the_chosen_layers(source, tmp_path):
    from transformers import BertForPreTraining

    assert main(["shrink", str(source), "--layers", "0,2,3", "--out", str(tmp_path / "small")]) == 0
    big, small = load_file(str(source / "model.safetensors")), load_file(str(tmp_path / "small" / "model.safetensors"))
    for key, value in small.items():
        if key.startswith("bert.encoder.layer."):
            new = int(key.split(".")[3])
            old = [0, 2, 3][new]
            assert torch.equal(value, big[key.replace(f"layer.{new}.", f"layer.{old}.", 1)]), key
        else:
            assert torch.equal(value, big[key]), key  # embeddings, pooler, MLM and NSP heads
    assert not any(k.startswith("bert.encoder.layer.3.") for k in small)

    # The same computation: embeddings, then source layers 0, 2, 3, then the heads.
    a = BertForPreTraining.from_pretrained(source).eval()
    b = BertForPreTraining.from_pretrained(tmp_path / "small").eval()
    assert b.config.num_hidden_layers == 3 and b.config.hidden_size == a.config.hidden_size
    ids = torch.randint(106, 21128, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = a.bert.embeddings(input_ids=ids)
        for i in (0, 2, 3):
            out = a.bert.encoder.layer[i](hidden)
            hidden = out[0] if isinstance(out, tuple) else out
        expected = a.cls.predictions(hidden)
        got = b(ids).prediction_logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert (tmp_path / "small" / "vocab.txt").is_file()


@pytest.mark.parametrize("layers, message", [
    ("0,4", "unknown layer index 4: the model has 4 layers (0 to 3)"),
    ("-1", "unknown layer index -1"),
    ("1,1", "layer 1 is given more than once"),
    ("one", "--layers expects indices such as 0,1,2"),
])
def test_bad_layers_are_one_line(source, tmp_path, capsys, layers, message):
    assert main(["shrink", str(source), "--layers", layers, "--out", str(tmp_path / "small")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("bertwwm shrink: error:")
    assert not (tmp_path / "small").exists()
