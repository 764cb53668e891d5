"""The schedule over steps or over a time budget, the batch ramp, held-out evaluation with its unigram
reference, and the dropout written for fine-tuning. The clock is replaced by a deterministic one: nothing
here depends on how fast the CPU is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from bertwwm.core.errors import UserError
from bertwwm.modeling.optim import phase_schedule, warmup_linear_decay
from bertwwm.pretrain import Phase, config_from_recipe, load_recipe, parse_duration, pretrain
from bertwwm.pretrain import clock as pretrain_clock  # the module whose clock `Clock` reads


@pytest.fixture(scope="module")
def folders(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Dynamic, no-NSP data at length 64 from the CLUE sample, and a held-out folder from other documents."""
    from bertwwm.data.prepare import prepare

    root = tmp_path_factory.mktemp("schedule")
    lines = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()
    (root / "train.txt").write_text("\n".join(lines[:1500]) + "\n", encoding="utf-8")
    (root / "heldout.txt").write_text("\n".join(lines[-300:]) + "\n", encoding="utf-8")
    out = {"train": root / "train-64", "heldout": root / "heldout-64"}
    prepare([root / "train.txt"], out["train"], max_seq_length=64, dynamic=True, nsp=False, progress=False)
    prepare([root / "heldout.txt"], out["heldout"], max_seq_length=64, dynamic=True, nsp=False, progress=False)
    return out


class FakeClock:
    """Advances a fixed amount at every reading: a run's timeline is then a function of its steps."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def _config(folders, out: Path, **overrides):
    base = dict(data=str(folders["train"]), out=str(out), threads=1, nsp=False, eval_every=1000, log_every=5,
                save_every=1000, progress=False)
    base.update(overrides)
    cfg = config_from_recipe(*load_recipe("tiny-cpu"), **base)
    for p in cfg.phases:
        p.max_seq_length, p.max_predictions, p.batch_size, p.steps = 64, 10, 8, 40
    return cfg


def _records(run: Path, split: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


# ------------------------------------------------------------------------------------------- schedule

def test_step_schedule_is_berts_warmup_and_linear_decay_per_phase():
    phases = [Phase(steps=100, batch_size=8), Phase(steps=50, batch_size=4, lr=5e-4)]
    for step in range(150):
        point = phase_schedule(phases, base_lr=1e-3, warmup_steps=None, warmup_ratio=0.1, step=step)
        if step < 100:
            assert (point.phase, point.batch_size) == (0, 8)
            assert point.lr_factor == warmup_linear_decay(step, 10, 100)
        else:
            assert (point.phase, point.batch_size) == (1, 4)
            assert point.lr_factor == pytest.approx(0.5 * warmup_linear_decay(step - 100, 5, 50))


def test_time_schedule_warms_up_decays_to_zero_and_shares_time_like_steps():
    phases = [Phase(steps=300, batch_size=32, batch_size_start=8), Phase(steps=100, batch_size=16)]
    points = [phase_schedule(phases, base_lr=1e-3, warmup_steps=None, warmup_ratio=0.1, fraction=f, multiple=4)
              for f in np.linspace(0, 0.999, 400)]
    first = [p for p in points if p.phase == 0]
    assert len(first) == pytest.approx(300, abs=2)  # 3/4 of the time, as 300 of 400 steps
    factors = [p.lr_factor for p in first]
    peak = int(np.argmax(factors))
    assert factors[0] == 0.0 and max(factors) == pytest.approx(1.0, abs=0.02)
    assert peak == pytest.approx(30, abs=2)  # warm-up: 10% of the phase
    assert all(a <= b for a, b in zip(factors[:peak], factors[1:peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1:]))
    assert factors[-1] < 0.02
    batches = [p.batch_size for p in first]
    assert batches[0] == 8 and batches[-1] == 32 and all(b % 4 == 0 for b in batches)
    assert all(a <= b for a, b in zip(batches, batches[1:]))
    assert batches[150] == 32  # the ramp takes the first half of the phase
    assert {p.batch_size for p in points if p.phase == 1} == {16}


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "m", "", "1h-3m"])
def test_bad_duration_is_a_clear_error(text):
    with pytest.raises(UserError, match="cannot read the duration"):
        parse_duration(text)


# ---------------------------------------------------------------------------------------- time budget

@pytest.mark.slow  # two pretraining runs and a resume (~8 s of CPU)
def test_time_budget_stops_saves_and_resumes_exactly(folders, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrain_clock, "_now", FakeClock(0.25))
    whole = tmp_path / "whole"
    cfg = _config(folders, whole, time_budget=20.0, save_every=6, keep_last=10)
    cfg.phases[0].batch_size_start = 4
    final = pretrain(cfg)
    assert (final / "model.safetensors").is_file()
    train = _records(whole, "train")
    steps = train[-1]["step"]
    assert 10 < steps < 60  # ~2 readings a step at 0.25 s each: the budget, not the 40 steps, ended it
    assert train[-1]["elapsed_s"] >= 20.0 and train[-1]["lr"] < 0.05 * cfg.lr
    assert train[0]["batch_size"] < train[-1]["batch_size"] == 8
    assert _records(whole, "eval")[-1]["step"] == steps  # the final held-out score

    # Interrupted after its first checkpoint: resume continues the clock and the data from there.
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "final")
    for later in sorted((cut / "checkpoints").glob("step-*"))[1:]:
        shutil.rmtree(later)
    monkeypatch.setattr(pretrain_clock, "_now", FakeClock(0.25))
    resumed = _config(folders, cut, time_budget=20.0, save_every=6, keep_last=10, resume=True)
    resumed.phases[0].batch_size_start = 4
    pretrain(resumed)
    assert _records(cut, "train")[-1]["step"] == steps
    a, b = load_file(str(final / "model.safetensors")), load_file(str(cut / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_time_budget_from_the_cli(folders, tmp_path, monkeypatch, capsys):
    from bertwwm.cli import main

    monkeypatch.setattr(pretrain_clock, "_now", FakeClock(0.5))
    run = tmp_path / "cli"
    code = main(["pretrain", "--recipe", "tiny-cpu", "--data", str(folders["train"]), "--out", str(run), "--no-nsp",
                 "--threads", "1", "--no-progress", "--time-budget", "5s", "--batch-size", "4",
                 "--set", "phases.0.max_seq_length=64", "--set", "phases.0.max_predictions=10"])
    assert code == 0 and (run / "final" / "config.json").is_file()
    assert json.loads((run / "run_config.json").read_text())["time_budget"] == 5.0
    assert main(["pretrain", "--recipe", "tiny-cpu", "--data", str(folders["train"]), "--out", str(tmp_path / "x"),
                 "--time-budget", "five minutes"]) == 2
    assert "cannot read the duration" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ held-out and unigram

def test_heldout_tail_is_never_trained_on(folders, tmp_path):
    from bertwwm.pretrain import Dist, PhaseData

    cfg = _config(folders, tmp_path / "run", eval_instances=64)
    data = PhaseData(cfg, 0, str(folders["train"]), Dist())
    assert data.n_eval == 64 and data.n_train == len(data.dataset) - 64
    seen = data.stream(0, 5 * len(data.dataset))  # five epochs of the training stream
    assert seen.max() < data.n_train and len(set(seen.tolist())) == data.n_train
    with_folder = _config(folders, tmp_path / "run", heldout=str(folders["heldout"]))
    assert PhaseData(with_folder, 0, str(folders["train"]), Dist()).n_eval == 0  # all data trains then


def test_unigram_reference_is_the_training_text_frequencies(folders):
    from bertwwm.pretrain.heldout import unigram_log_probs
    from bertwwm.data.storage import PreparedDataset

    dataset = PreparedDataset(folders["train"])
    held = [dataset[i] for i in range(len(dataset) - 10, len(dataset))]
    log_probs = unigram_log_probs(dataset, held, 21128)
    counts = np.ones(21128)
    for i in range(len(dataset) - 10):
        counts += np.bincount(dataset[i]["input_ids"], minlength=21128)
    np.testing.assert_allclose(log_probs, np.log(counts / counts.sum()), rtol=1e-9, atol=1e-12)


@pytest.mark.slow  # ~18 s of CPU: a pretraining run with held-out evaluation
def test_eval_records_carry_a_fixed_unigram_reference(folders, tmp_path):
    run = tmp_path / "run"
    cfg = _config(folders, run, heldout=str(folders["heldout"]), eval_every=20, eval_instances=200, lr=2e-3,
                  dropout=0.0)
    for p in cfg.phases:
        p.steps = 200
    pretrain(cfg)
    evals = _records(run, "eval")
    assert [r["step"] for r in evals] == list(range(20, 201, 20))
    assert len({r["unigram_loss"] for r in evals}) == 1  # the same masks at every evaluation
    assert len({r["instances"] for r in evals}) == 1 and evals[0]["instances"] == 200
    first, last = evals[0], evals[-1]
    assert first["mlm_loss"] > first["unigram_loss"]  # a fresh model knows less than token frequencies
    assert last["mlm_loss"] < first["mlm_loss"] - 0.5
    # dropout 0 is a pretraining setting: the model folder keeps BERT's rate for fine-tuning
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.1


def test_heldout_folder_longer_than_the_phase_is_refused(folders, tmp_path, shared_data):
    from bertwwm.data.prepare import prepare

    longer = tmp_path / "heldout-128"
    prepare([folders["train"].parent / "heldout.txt"], longer, max_seq_length=128, dynamic=True, nsp=False,
            progress=False)
    cfg = _config(folders, tmp_path / "run", heldout=str(longer))
    with pytest.raises(UserError, match="prepared at max length 128"):
        pretrain(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    missing = _config(folders, tmp_path / "run2", heldout=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="held-out folder not found"):
        pretrain(missing)


@pytest.mark.slow  # a pretraining run (~8 s of CPU)
def test_macbert_policy_pretrains_with_the_datas_similar_words_table(shared_data, tmp_path):
    """Dynamic macbert masking in pretrain takes the table `prepare --masking macbert` built and named."""
    from bertwwm.data.prepare import prepare

    lines = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(lines[:2500]) + "\n", encoding="utf-8")
    data = tmp_path / "macbert-64"
    manifest = prepare([text], data, max_seq_length=64, dynamic=True, nsp=False, masking="macbert", progress=False)
    assert manifest["config"]["similar_words"]["path"]
    run = tmp_path / "run"
    cfg = config_from_recipe(*load_recipe("tiny-cpu-fast"), data=str(data), out=str(run), threads=1,
                             policy="macbert", eval_every=5, log_every=5, progress=False)
    from bertwwm.pretrain import scale_steps

    scale_steps(cfg, 10)
    pretrain(cfg)
    evals = _records(run, "eval")
    assert evals and evals[-1]["step"] == 10 and np.isfinite(evals[-1]["mlm_loss"])
