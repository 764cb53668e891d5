"""The demo end to end on its "test" budget (seconds), then again: the second run must reuse every step."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from bertwwm.cli import main
from bertwwm.demo import BUDGETS, POLICIES, TASKS, demo, task_data_dir
from bertwwm.errors import EXIT_USAGE
from bertwwm.storage import read_manifest
from bertwwm.tasks.registry import get_task

STEPS = [f"prepare {p}" for p in POLICIES] + [f"pretrain {p}" for p in POLICIES] + \
        [f"finetune {t} {p}" for t in TASKS for p in POLICIES]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    t0 = time.perf_counter()
    first = demo(out, budget="test", progress=False)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    second = demo(out, budget="test", progress=False)
    return out, first, first_s, second, time.perf_counter() - t0


def test_run_folder_holds_every_output(demo_runs):
    out, first, *_ = demo_runs
    assert [s["step"] for s in first["steps"]] == STEPS + ["report"]
    assert first["reused"] == [] and first["out"] == str(out.resolve())
    for name in ("show-masking.txt", "results.md", "results.json", "demo.json",
                 "pretrain-loss.png", "finetune-scores.png", "pretrain-wwm/curves.png", "pretrain-char/curves.png"):
        assert (out / name).is_file(), name
    for png in out.rglob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
    for policy in POLICIES:
        assert read_manifest(out / f"data-{policy}")["complete"]
        assert (out / f"pretrain-{policy}" / "final" / "model.safetensors").is_file()
        for task in TASKS:
            rows = [json.loads(line) for line in (out / f"finetune-{task}-{policy}" / "results.jsonl").open()]
            assert [r["seed"] for r in rows] == [1]
            assert rows[0]["dev"]["total"] == dict(zip(TASKS, (BUDGETS["test"].chnsenticorp[1],
                                                                BUDGETS["test"].cmrc2018[1])))[task]


def test_table_is_max_mean_over_seeds_of_the_saved_results(demo_runs):
    out, first, *_ = demo_runs
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "### ChnSentiCorp" in table and "### CMRC 2018" in table and first["table"] in table
    # Every cell is recomputed here from the per-seed results the fine-tuning runs wrote.
    for task in TASKS:
        metric = get_task(task).report_metrics[-1][-1]  # accuracy, or F1 for CMRC 2018
        for policy, label in (("wwm", "tiny BERT-wwm"), ("char", "tiny BERT (char)")):
            values = [json.loads(line)["dev"][metric]
                      for line in (out / f"finetune-{task}-{policy}" / "results.jsonl").open()]
            section = table.split(f"### {get_task(task).title}")[1].split("###")[0]
            row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
            cells = re.findall(r"(\d+\.\d) \((\d+\.\d)\)", row)
            assert cells[-1] == (f"{max(values):.1f}", f"{np.mean(values):.1f}")


def test_only_the_masking_differs_between_the_two_datasets(demo_runs):
    out, *_ = demo_runs
    shard = {p: out / f"data-{p}" / "shard-00000" for p in POLICIES}
    arrays = {p: {n: np.load(shard[p] / f"{n}.npy") for n in
                  ("input_ids", "word_starts", "offsets", "mlm_offsets", "mlm_positions")} for p in POLICIES}
    for name in ("input_ids", "word_starts", "offsets"):
        assert np.array_equal(arrays["wwm"][name], arrays["char"][name]), name
    assert not np.array_equal(arrays["wwm"]["mlm_positions"], arrays["char"]["mlm_positions"])
    # Under wwm, a masked token's whole word is masked: every position that continues a word is masked
    # exactly when the token before it is.
    a = arrays["wwm"]
    split_words = 0
    for i in range(len(a["offsets"]) - 1):
        starts = a["word_starts"][a["offsets"][i]:a["offsets"][i + 1]].astype(bool)
        masked = np.zeros(len(starts), bool)
        masked[a["mlm_positions"][a["mlm_offsets"][i]:a["mlm_offsets"][i + 1]]] = True
        continuing = np.flatnonzero(~starts)
        split_words += int(np.sum(masked[continuing] != masked[continuing - 1]))
    assert split_words == 0
    configs = {p: json.loads((out / f"pretrain-{p}" / "run_config.json").read_text()) for p in POLICIES}
    differing = {k for k in configs["wwm"] if configs["wwm"][k] != configs["char"][k]}
    assert differing == {"out", "data", "policy"}  # same steps, batch, seed, optimizer: equal budgets


def test_second_run_reuses_every_step(demo_runs):
    out, first, first_s, second, second_s = demo_runs
    assert second["reused"] == STEPS
    assert second["table"] == first["table"]
    assert second_s < first_s / 3


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
