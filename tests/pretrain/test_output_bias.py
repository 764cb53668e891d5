"""`[model] output_bias`: a model trained from scratch can start its MLM output bias at the data's log unigram
frequencies (tiny-cpu-fast does), and every held-out evaluation reports how far the embeddings degenerated.
`[model] decoder_vocab = "corpus"` (tiny-cpu-fast too): the softmax scores only the training text's tokens."""

from __future__ import annotations

import dataclasses
import gzip
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.demo import sample_corpus
from bertwwm.pretrain import PretrainConfig
from bertwwm.pretrain.config import TRAJECTORY_FIELDS, config_json, trajectory


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from bertwwm.data.prepare import prepare

    root = tmp_path_factory.mktemp("output-bias")
    with gzip.open(sample_corpus(), "rt", encoding="utf-8") as f:
        lines = f.read().splitlines()[:300]
    (root / "text.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prepare([root / "text.txt"], root / "data", max_seq_length=64, dynamic=True, nsp=False, progress=False)
    return root / "data"


def _run(data, out, *extra):
    assert main(["pretrain", "--recipe", "tiny-cpu-fast", "--data", str(data), "--out", str(out), "--max-steps", "2",
                 "--threads", "1", "--no-progress", "--eval-every", "1", "--log-every", "1",
                 "--set", "optim.lr=1e-9", *extra]) == 0  # a negligible learning rate: the weights stay at init
    bias = load_file(str(out / "final" / "model.safetensors"))["cls.predictions.bias"].numpy()
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    return bias, evals


def test_unigram_output_bias_starts_on_the_unigram_loss(data, tmp_path):
    from bertwwm.data.storage import PreparedDataset
    from bertwwm.pretrain.heldout import unigram_log_probs

    bias, evals = _run(data, tmp_path / "unigram")
    dataset = PreparedDataset(data)
    n = len(dataset)
    tail = [dataset[i] for i in range(n - min(512, n // 10), n)]  # the run's own held-out tail is not counted
    np.testing.assert_allclose(bias, unigram_log_probs(dataset, tail, len(bias), smoothing=0.1), atol=1e-4)
    first = evals[0]
    # On the unigram plateau from the start: at or a little below the dashed line, which is add-one smoothed
    # (the bias is add-0.1, so it gives the tokens the text does contain a little more probability).
    assert first["unigram_loss"] - 1.0 < first["mlm_loss"] < first["unigram_loss"] + 0.3
    assert -0.1 < first["embedding_cosine"] < 0.1  # a fresh random table

    zero_bias, zero_evals = _run(data, tmp_path / "zero", "--set", "model.output_bias=zero")
    assert np.abs(zero_bias).max() < 1e-3
    assert zero_evals[0]["mlm_loss"] > first["unigram_loss"] + 2  # ~log(21128) = 9.96: far above the plateau


def test_a_given_model_keeps_its_own_bias(data, tmp_path):
    bias, _ = _run(data, tmp_path / "scratch")
    continued, _ = _run(data, tmp_path / "continued", "--init", str(tmp_path / "scratch" / "final"))
    np.testing.assert_allclose(continued, bias, atol=1e-4)  # not recomputed from the data


def test_corpus_decoder_vocab_trains_only_the_texts_tokens(data, tmp_path):
    from bertwwm.data.storage import PreparedDataset

    absent = PreparedDataset(data).token_counts(21128)[:21128] == 0
    runs = {}
    for vocab in ("corpus", "full"):
        bias, evals = _run(data, tmp_path / vocab, "--set", "optim.lr=1e-3", "--set", f"model.decoder_vocab={vocab}")
        runs[vocab] = bias, evals
    initial, _ = _run(data, tmp_path / "initial")  # lr 1e-9: the bias as it started
    moved = {vocab: np.abs(bias - initial) for vocab, (bias, _) in runs.items()}
    assert moved["corpus"][absent].max() == 0  # no gradient reached the tokens the text lacks
    assert moved["full"][absent].max() > 1e-6
    assert moved["corpus"][~absent].max() > 1e-4  # the text's own tokens did train
    for _, evals in runs.values():  # held-out evaluation scores the full vocabulary either way
        assert evals[-1]["mlm_loss"] < evals[-1]["unigram_loss"] + 1


def test_corpus_decoder_vocab_is_refused_with_fsdp(data, tmp_path, capsys):
    assert main(["pretrain", "--recipe", "tiny-cpu-fast", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--fsdp"]) == 2
    assert "decoder_vocab" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_bad_value_is_a_clear_error(data, tmp_path, capsys):
    assert main(["pretrain", "--recipe", "tiny-cpu-fast", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--set", "model.output_bias=frequency"]) == 2
    assert 'output_bias' in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_runs_written_before_the_setting_existed_still_resume():
    """A run_config.json of 0.2 has no output_bias: it trained with the default, which the check assumes."""
    saved = config_json(PretrainConfig(preset="tiny"))
    del saved["output_bias"]
    assert trajectory(saved) == trajectory(config_json(PretrainConfig(preset="tiny")))
    changed = config_json(dataclasses.replace(PretrainConfig(preset="tiny"), output_bias="unigram"))
    assert [k for k in TRAJECTORY_FIELDS if trajectory(saved)[k] != trajectory(changed)[k]] == ["output_bias"]
    del saved["decoder_vocab"]  # nor decoder_vocab (0.3)
    assert trajectory(saved) == trajectory(config_json(PretrainConfig(preset="tiny")))
