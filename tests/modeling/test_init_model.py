"""`bertwwm init`: the random-init control is a standard folder, a function of its seed, any shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.core.errors import UserError
from bertwwm.modeling.init_model import init_model, materialise_random, parse_random_ref


def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


def test_a_standard_folder_that_transformers_loads(tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    folder = init_model(tmp_path / "tiny", preset="tiny", seed=1)
    model = AutoModelForMaskedLM.from_pretrained(folder)
    assert type(model).__name__ == "BertForMaskedLM"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (128, 2)
    assert model.config.hidden_dropout_prob == 0.1  # fine-tuned like any BERT
    assert AutoTokenizer.from_pretrained(folder).vocab_size == 21128


def test_weights_are_a_function_of_the_seed(tmp_path):
    a, b, c = (init_model(tmp_path / name, preset="tiny", seed=s) for name, s in (("a", 1), ("b", 1), ("c", 2)))
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not np.array_equal(wa[key].numpy(), wc[key].numpy())


def test_like_copies_another_models_shape(tmp_path):
    source = init_model(tmp_path / "small", preset="small", seed=0)
    copy = init_model(tmp_path / "copy", like=str(source), seed=5)
    shape = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
    a, b = (json.loads((f / "config.json").read_text()) for f in (source, copy))
    assert [a[k] for k in shape] == [b[k] for k in shape]


def test_cli_and_refusals(tmp_path, capsys):
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert main(["init", "--preset", "tiny", "--out", str(tmp_path / "m")]) == 2
    assert "already holds a model" in capsys.readouterr().err


def test_random_references(tmp_path):
    assert parse_random_ref("random:tiny") == ("tiny", 0)
    assert parse_random_ref("random:small@7") == ("small", 7)
    assert parse_random_ref("runs/wwm/final") is None
    for bad in ("random:huge", "random:tiny@x"):
        with pytest.raises(UserError, match="random:PRESET"):
            parse_random_ref(bad)
    folder = materialise_random("random:tiny@4", tmp_path)
    again = materialise_random("random:tiny@4", tmp_path)
    assert folder == again and (folder / "model.safetensors").is_file()


def test_report_labels_runs_of_a_random_init_model(tmp_path):
    """`report` marks the control's runs: a folder `init` wrote, or a random: reference."""
    from bertwwm.report import report

    control = init_model(tmp_path / "control", preset="tiny", seed=0)
    runs = []
    for name, model in (("pre", "runs/wwm/final"), ("ctl", str(control)), ("ref", "random:tiny")):
        folder = tmp_path / name
        folder.mkdir()
        row = {"task": "chnsenticorp", "model": model, "seed": 1, "dev": {"accuracy": 80.0, "total": 10},
               "dev_score": 80.0}
        (folder / "results.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
        runs.append(folder)
    table, rows = report(runs, None)
    labels = [label for label, _ in rows]
    assert labels[0] == "runs/wwm/final" and labels[1].endswith("(random init)")
    assert labels[2] == "random:tiny (random init)"
    assert [summary.get("control", False) for _, summary in rows] == [False, True, True]
    assert "(random init)" in table
