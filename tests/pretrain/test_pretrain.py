"""Pretraining on real prepared data: it learns, resumes bitwise after SIGKILL, DDP matches 1 process,
and bad input gives one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bertwwm.cli import main
from bertwwm.core.errors import UserError
from bertwwm.pretrain import config_from_recipe, load_recipe, pretrain, recipe_names

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _corpus_slice(shared_data: Path, folder: Path, lines: int) -> Path:
    text = (shared_data / "corpus" / "clue-small-sample.txt").read_text(encoding="utf-8").splitlines()
    path = folder / "clue-slice.txt"
    path.write_text("\n".join(text[:lines]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def prepared(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Real prepared folders from the shared CLUE sample: dynamic+NSP and static without NSP, length 64."""
    from bertwwm.data.prepare import prepare

    root = tmp_path_factory.mktemp("prepared")
    text = _corpus_slice(shared_data, root, 3000)
    out = {"dynamic": root / "dynamic-nsp-64", "static": root / "static-64"}
    prepare([text], out["dynamic"], max_seq_length=64, dynamic=True, nsp=True, progress=False)
    prepare([text], out["static"], max_seq_length=64, dupe_factor=1, nsp=False, progress=False)
    return out


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bertwwm", "pretrain", "--recipe", "tiny-cpu", "--threads", "1", "--no-progress",
            *args]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_recipes_reproduce_the_report_table():
    names = {"bert-wwm", "bert-wwm-ext", "roberta-wwm-ext", "roberta-wwm-ext-large", "tiny-cpu"}
    assert names <= set(recipe_names())
    cfgs = {n: config_from_recipe(*load_recipe(n)) for n in recipe_names()}

    def shape(c):
        return [(p.max_seq_length, p.batch_size, p.steps) for p in c.phases]

    google = "google-bert/bert-base-chinese"
    wwm, ext = cfgs["bert-wwm"], cfgs["bert-wwm-ext"]
    assert shape(wwm) == [(128, 2560, 100_000), (512, 384, 100_000)]
    assert shape(ext) == [(128, 2560, 1_000_000), (512, 384, 400_000)]
    for c in (wwm, ext):
        assert (c.optimizer, c.lr, c.nsp, c.init) == ("lamb", 1e-4, True, google)
    rob, large = cfgs["roberta-wwm-ext"], cfgs["roberta-wwm-ext-large"]
    assert shape(rob) == [(512, 384, 1_000_000)]
    assert (rob.optimizer, rob.nsp, rob.data_masking, rob.init) == ("adamw", False, "static", google)
    assert shape(large) == [(512, 512, 2_000_000)]
    assert (large.optimizer, large.nsp, large.init, large.preset) == ("adamw", False, "random", "large")


@pytest.mark.slow
def test_tiny_model_learns_on_the_shared_corpus(prepared, tmp_path):
    cfg = config_from_recipe(*load_recipe("tiny-cpu"), data=str(prepared["dynamic"]), out=str(tmp_path / "run"),
                             threads=1, eval_every=40, log_every=10, save_every=1000, progress=False)
    cfg.phases[0].steps = 120
    cfg.phases[0].batch_size = 16
    final = pretrain(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    held_out = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in held_out] == [40, 80, 120]
    # ln(21128) = 9.96: an untrained model starts near it; a few hundred steps must bring it well below.
    assert train[0]["mlm_loss"] > 9.0
    assert held_out[-1]["mlm_loss"] < train[0]["mlm_loss"] - 2.5  # perplexity down more than 12-fold
    assert held_out[-1]["mlm_loss"] < held_out[0]["mlm_loss"]
    # Chance is 1/21,128; a few hundred tiny steps reach the unigram level (mostly "的", ~5%).
    assert held_out[-1]["mlm_acc"] > 0.03 and "nsp_acc" in held_out[-1]
    assert all(r["tokens_per_s"] > 0 for r in train)
    assert (tmp_path / "run" / "tensorboard").is_dir()
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(final)
    assert model.config.num_hidden_layers == 2 and model.config.vocab_size == 21128


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_identical(prepared, tmp_path):
    common = ["--data", str(prepared["dynamic"]), "--max-steps", "24", "--batch-size", "8", "--save-every", "8",
              "--eval-every", "12", "--keep-last", "1"]
    straight = tmp_path / "straight"
    subprocess.run(_cli(*common, "--out", str(straight)), check=True, env=ENV, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*common, "--out", str(killed)), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-00000008").is_dir():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "final").exists()
    resumed = subprocess.run(_cli(*common, "--out", str(killed), "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(straight / "final"), _weights(killed / "final")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ckpts = sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert ckpts == ["step-00000016"]  # keep-last 1 (24 is the final model)
    steps = [json.loads(l)["step"] for l in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(l)["step"] for l in (straight / "metrics.jsonl").read_text().splitlines()]


def _torchrun(args: list[str], cwd: Path, port: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "bertwwm", *args[3:]]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_ddp_and_fsdp_match_one_process(prepared, tmp_path):
    common = ["--data", str(prepared["static"]), "--max-steps", "6", "--batch-size", "16", "--no-nsp",
              "--set", "model.dropout=0.0", "--eval-every", "3", "--save-every", "3"]
    single, ddp, fsdp = tmp_path / "single", tmp_path / "ddp", tmp_path / "fsdp"
    subprocess.run(_cli(*common, "--out", str(single)), check=True, env=ENV, capture_output=True)
    _torchrun(_cli(*common, "--out", str(ddp)), tmp_path, 29533)
    _torchrun(_cli(*common, "--out", str(fsdp), "--fsdp"), tmp_path, 29534)
    a = _weights(single / "final")
    for other in (ddp, fsdp):
        b = _weights(other / "final")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=2e-5, msg=k)
        la = [json.loads(l) for l in (single / "metrics.jsonl").read_text().splitlines()]
        lb = [json.loads(l) for l in (other / "metrics.jsonl").read_text().splitlines()]
        assert [(r["step"], r["split"]) for r in la] == [(r["step"], r["split"]) for r in lb]
        for ra, rb in zip(la, lb):
            assert rb["mlm_loss"] == pytest.approx(ra["mlm_loss"], rel=1e-5)
            # Accuracy counts argmaxes: a near-tie flips under the ~1e-6 logit differences of another
            # reduction order. Each record covers hundreds of masked tokens (train: 6 steps x 16 instances of
            # 64 tokens, 15% masked; eval: the held-out instances), so 0.02 is a few flips; a wrong loss
            # normalisation or data split moves it far more.
            assert rb["mlm_acc"] == pytest.approx(ra["mlm_acc"], abs=0.02)
    # ...and training really moved the weights away from the (seeded) initialisation.
    from bertwwm.modeling.model import bert_config, build_model

    torch.manual_seed(12345)
    init = build_model(bert_config("tiny", dropout=0.0), nsp=False).state_dict()
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert (a[key] - init[key]).abs().max() > 1e-3

    # FSDP checkpoints hold the gathered weights and optimizer: resuming from step 3 repeats steps 4-6 exactly.
    resumed = tmp_path / "fsdp-resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(fsdp / "checkpoints" / "step-00000003", resumed / "checkpoints" / "step-00000003")
    _torchrun(_cli(*common, "--out", str(resumed), "--fsdp", "--resume"), tmp_path, 29535)
    b, c = _weights(fsdp / "final"), _weights(resumed / "final")
    assert all(torch.equal(b[k], c[k]) for k in b)


@pytest.mark.parametrize("args, message", [
    ({"--data": "/nonexistent/folder"}, "prepared data folder not found"),
    ({"--recipe": "no-such-recipe"}, "unknown recipe"),
    ({"--batch-size": "10", "--set": "train.grad_accum=4"}, "not a multiple of grad_accum"),
    ({"--set": "optim.name=sgd"}, "optim.name must be one of"),
    ({"--set": "model.preset=huge"}, "model.preset must be one of"),
    ({"--set": "phases.0.max_seq_length=32"}, "prepared at 64"),
    ({"--set": "optim.lr=-1"}, "optim.lr must be positive"),
    ({"--set": "masking.data_masking=static"}, "expects static masking"),
    ({"--max-steps": "0"}, "--max-steps must be positive"),
])
def test_bad_config_and_missing_data_exit_2(prepared, tmp_path, capsys, args, message):
    options = {"--recipe": "tiny-cpu", "--data": str(prepared["dynamic"]), "--out": str(tmp_path / "r"),
               "--max-steps": "1", **args}
    argv = ["pretrain", "--no-progress"] + [x for kv in options.items() for x in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "final").exists()


def test_more_clear_errors(prepared, tmp_path, capsys):
    def pretrain_exit(recipe, data):
        return main(["pretrain", "--recipe", str(recipe), "--data", str(data), "--out", str(tmp_path / "r")])

    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 1e-4\n", encoding="utf-8")
    assert pretrain_exit(bad, prepared["dynamic"]) == 2
    assert "unknown key optim.learning_rate" in capsys.readouterr().err
    bad.write_text("[optim\n", encoding="utf-8")
    assert pretrain_exit(bad, prepared["dynamic"]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    # NSP recipe on data without NSP labels
    assert pretrain_exit("tiny-cpu", prepared["static"]) == 2
    assert "no NSP labels" in capsys.readouterr().err
    # the 512 phase of bert-wwm needs --data-512
    assert pretrain_exit("bert-wwm", prepared["dynamic"]) == 2
    assert "--data-512" in capsys.readouterr().err
    # a finished run's checkpoints are not silently overwritten
    (tmp_path / "r" / "checkpoints" / "step-00000005").mkdir(parents=True)
    (tmp_path / "r" / "checkpoints" / "step-00000005" / "trainer_state.pt").write_bytes(b"")
    assert pretrain_exit("tiny-cpu", prepared["dynamic"]) == 2
    assert "--resume" in capsys.readouterr().err
    # --fsdp outside torchrun
    assert main(["pretrain", "--recipe", "tiny-cpu", "--data", str(prepared["dynamic"]), "--out",
                 str(tmp_path / "f"), "--fsdp"]) == 2
    assert "torchrun" in capsys.readouterr().err
    with pytest.raises(UserError):
        config_from_recipe({"phases": []})


def test_continued_pretraining_from_a_tf_checkpoint(prepared, shared_data, tmp_path, monkeypatch):
    """`--init` a TF-1 checkpoint (converted by the zoo): training starts from its weights."""
    from bertwwm.modeling import zoo

    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))
    tf = shared_data / "checkpoints" / "tiny-bert-tf"
    assert main(["pretrain", "--recipe", "tiny-cpu", "--init", str(tf), "--data", str(prepared["dynamic"]),
                 "--out", str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--lr", "1e-7",
                 "--threads", "1", "--no-progress"]) == 0
    start = _weights(Path(zoo.resolve_model(str(tf))))
    final = _weights(tmp_path / "run" / "final")
    assert final["bert.embeddings.word_embeddings.weight"].shape == (21128, 64)  # the checkpoint's shape
    for k in ("bert.encoder.layer.1.output.dense.weight", "cls.predictions.transform.dense.weight",
              "cls.seq_relationship.weight"):
        torch.testing.assert_close(final[k], start[k], rtol=0, atol=1e-5)
    assert not torch.equal(final["bert.encoder.layer.1.output.dense.weight"],
                           start["bert.encoder.layer.1.output.dense.weight"])  # but it did train
    config = json.loads((tmp_path / "run" / "final" / "config.json").read_text())
    assert config["hidden_act"] == "gelu_new" and config["hidden_size"] == 64


@pytest.mark.slow  # real training: the full suite runs it, the edit-test loop does not
def test_bf16_autocast_and_grad_accum_run(prepared, tmp_path):
    """bf16 autocast on CPU trains (finite, falling loss); grad-accum 2 gives the batch-16 result."""
    def run(out, *extra):
        cfg_args = ["pretrain", "--recipe", "tiny-cpu", "--data", str(prepared["static"]), "--no-nsp",
                    "--set", "model.dropout=0.0", "--out", str(tmp_path / out), "--max-steps", "4",
                    "--batch-size", "16", "--threads", "1", "--no-progress", "--log-every", "1", *extra]
        assert main(cfg_args) == 0
        return [json.loads(l) for l in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    plain, accum = run("plain"), run("accum", "--grad-accum", "2")
    for a, b in zip(plain, accum):
        assert b["mlm_loss"] == pytest.approx(a["mlm_loss"], rel=1e-5)
    wa, wb = _weights(tmp_path / "plain" / "final"), _weights(tmp_path / "accum" / "final")
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=2e-5)
    bf16 = run("bf16", "--bf16")
    train = [r for r in bf16 if r["split"] == "train"]
    assert all(np.isfinite(r["mlm_loss"]) for r in train)
    assert train[0]["mlm_loss"] == pytest.approx(plain[0]["mlm_loss"], rel=2e-2)  # bf16 is close to fp32
    assert train[-1]["mlm_loss"] < train[0]["mlm_loss"]


def test_two_phase_length_schedule_in_one_run(prepared, tmp_path):
    """A 64-then-128 schedule: phases switch folder, batch and schedule inside one run."""
    recipe = tmp_path / "two-phase.toml"
    recipe.write_text("""
[model]
init = "random"
preset = "tiny"
nsp = true
[optim]
name = "lamb"
lr = 1e-3
warmup_steps = 2
[train]
log_every = 1
eval_every = 100
eval_instances = 16
[[phases]]
data = "data"
max_seq_length = 64
batch_size = 8
steps = 4
[[phases]]
data = "data_512"
max_seq_length = 128
batch_size = 4
steps = 3
lr = 5e-4
""", encoding="utf-8")
    assert main(["pretrain", "--recipe", str(recipe), "--data", str(prepared["dynamic"]), "--data-512",
                 str(prepared["dynamic"]), "--out", str(tmp_path / "run"), "--threads", "1", "--no-progress"]) == 0
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["phase"] for r in train] == [1, 1, 1, 1, 2, 2, 2]
    # lr of each step: 2 warm-up steps then linear decay, restarting at each phase's own peak
    assert [r["lr"] for r in train] == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4, 2.5e-4, 5e-4, 5e-4])
    assert [(r["step"], r["phase"]) for r in records if r["split"] == "eval"] == [(4, 1), (7, 2)]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
