"""The demo end to end on its "test" budget (seconds), then again: the second run must reuse every step."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from bertwwm.cli import main
from bertwwm.demo import BUDGETS, CONTROL, LABELS, POLICIES, TASKS, demo, task_data_dir
from bertwwm.core.errors import EXIT_USAGE
from bertwwm.data.storage import read_manifest
from bertwwm.tasks.registry import get_task

MODELS = (*POLICIES, CONTROL)
STEPS = ["prepare"] + [f"pretrain {p}" for p in POLICIES] + ["random-init control"] + \
        [f"finetune {t} {m}" for t in TASKS for m in MODELS]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    first = demo(out, budget="test", progress=False)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = demo(out, budget="test", progress=False)
    return out, first, first_s, second, time.perf_counter() - t0


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_run_folder_holds_every_output(demo_runs):
    out, first, *_ = demo_runs
    assert [s["step"] for s in first["steps"]] == STEPS + ["report"]
    assert first["reused"] == [] and first["out"] == str(out.resolve())
    for name in ("show-masking.txt", "results.md", "results.json", "demo.json",
                 "pretrain-loss.png", "finetune-scores.png", "pretrain-wwm/curves.png", "pretrain-char/curves.png"):
        assert (out / name).is_file(), name
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
    assert read_manifest(out / "data")["complete"]
    for policy in POLICIES:
        assert (out / f"pretrain-{policy}" / "final" / "model.safetensors").is_file()
    for name in MODELS:
        for task in TASKS:
            rows = [json.loads(line) for line in (out / f"finetune-{task}-{name}" / "results.jsonl").open()]
            assert [r["seed"] for r in rows] == [1]
            assert rows[0]["dev"]["total"] == dict(zip(TASKS, (BUDGETS["test"].chnsenticorp[1],
                                                                BUDGETS["test"].cmrc2018[1])))[task]


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_demo_json_and_results_json_carry_pretraining_and_the_control(demo_runs):
    out, first, *_ = demo_runs
    state = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert set(state["pretraining"]) == {LABELS[p] for p in POLICIES}
    for numbers in state["pretraining"].values():
        assert 0.0 <= numbers["heldout_mlm_acc"] <= 1.0
        assert numbers["heldout_mlm_loss"] > 0 and numbers["unigram_loss"] > 0
    rows = json.loads((out / "results.json").read_text(encoding="utf-8"))
    controls = [r for r in rows if r.get("control")]
    assert len(controls) == len(TASKS) and all("random init" in r["label"] for r in controls)
    assert {r["label"] for r in rows} == {LABELS[m] for m in MODELS}
    assert state["reading"] and "random init" in state["reading"]


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_the_control_is_the_pretraining_runs_starting_point(demo_runs):
    """Same shape, same seed, same weights before the first step: pretraining is the only difference."""
    import torch
    from safetensors.torch import load_file

    from bertwwm.modeling.model import bert_config, build_model

    out, *_ = demo_runs
    control = load_file(str(out / "random-init" / "model.safetensors"))
    torch.manual_seed(12345)  # what pretrain does before building a random-init model (the demo's seed)
    fresh = build_model(bert_config("tiny"), nsp=False).state_dict()
    for key, value in control.items():
        assert torch.equal(value, fresh[key]), key


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_table_is_max_mean_over_seeds_of_the_saved_results(demo_runs):
    out, first, *_ = demo_runs
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "### ChnSentiCorp" in table and "### CMRC 2018" in table and first["table"] in table
    # Every cell is recomputed here from the per-seed results the fine-tuning runs wrote.
    for task in TASKS:
        metric = get_task(task).report_metrics[-1][-1]  # accuracy, or F1 for CMRC 2018
        for name in MODELS:
            values = [json.loads(line)["dev"][metric]
                      for line in (out / f"finetune-{task}-{name}" / "results.jsonl").open()]
            section = table.split(f"### {get_task(task).title}")[1].split("###")[0]
            row = next(line for line in section.splitlines() if line.startswith(f"| {LABELS[name]} |"))
            cells = re.findall(r"(\d+\.\d) \((\d+\.\d)\)", row)
            assert cells[-1] == (f"{max(values):.1f}", f"{np.mean(values):.1f}")


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_masking_is_the_only_difference_between_the_two_pretraining_runs(demo_runs):
    out, *_ = demo_runs
    configs = {p: json.loads((out / f"pretrain-{p}" / "run_config.json").read_text()) for p in POLICIES}
    differing = {k for k in configs["wwm"] if configs["wwm"][k] != configs["char"][k]}
    assert differing == {"out", "policy"}  # same data, steps, batch, seed, optimizer: equal budgets
    assert configs["wwm"]["data"] == str(out / "data")


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_second_run_reuses_every_step(demo_runs):
    out, first, first_s, second, second_s = demo_runs
    assert second["reused"] == STEPS
    assert second["table"] == first["table"]
    assert second_s < first_s / 3


@pytest.mark.slow  # the whole demo, twice (fixture demo_runs)
def test_cli_refuses_to_mix_budgets_in_one_folder(demo_runs, capsys):
    out, *_ = demo_runs
    assert main(["demo", "--quick", "--out", str(out), "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "another budget" in err and "Traceback" not in err


def test_shipped_task_slices_are_readable_in_their_original_formats():
    for task, n_train, n_dev in (("chnsenticorp", 1000, 200), ("cmrc2018", 500, 201)):
        t = get_task(task)
        assert len(t.read(task_data_dir() / task / t.files["train"])) == n_train
        assert len(t.read(task_data_dir() / task / t.files["dev"])) == n_dev


@pytest.mark.slow  # two worker processes, each importing torch
def test_side_by_side_pretraining_gives_the_same_models_as_one_after_the_other(demo_runs, tmp_path):
    """The full budget runs the two policies in worker processes, a core each; on the test budget (steps, not
    seconds) that path must give the models the in-process path gave (up to float rounding: one thread
    here, all of them there)."""
    from safetensors.numpy import load_file

    from bertwwm.demo import Demo, step_prepare, step_pretrain_all

    out = demo_runs[0]
    run = Demo(tmp_path, BUDGETS["test"], 12345, 1, progress=False)
    models = step_pretrain_all(run, step_prepare(run), parallel=True)
    assert [s["step"] for s in run.steps] == ["prepare"] + [f"pretrain {p}" for p in POLICIES]
    assert run.pretrain_parallel and run.pretrain_seconds() == BUDGETS["test"].pretrain_seconds
    for policy in POLICIES:
        ours = load_file(str(models[policy] / "model.safetensors"))
        theirs = load_file(str(out / f"pretrain-{policy}" / "final" / "model.safetensors"))
        assert ours.keys() == theirs.keys()
        for name in ours:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5, err_msg=f"{policy}: {name}")
