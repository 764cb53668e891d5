"""Fine-tuning defaults by model size, the learning-rate grid's choice, and the random-init control as --model."""

from __future__ import annotations

import json
import random

import pytest

from bertwwm.cli import main
from bertwwm.finetune import default_settings, finetune_grid, size_defaults
from bertwwm.tasks.registry import get_task


def test_small_models_get_their_own_defaults_and_base_models_the_reports():
    sst = get_task("chnsenticorp")
    lr, epochs, source = size_defaults(sst, 128)
    assert lr > 10 * sst.learning_rate and "hidden size <= 128" in source
    assert size_defaults(sst, 768)[:2] == (sst.learning_rate, sst.epochs)
    assert size_defaults(sst, None)[:2] == (sst.learning_rate, sst.epochs)
    settings = default_settings(sst, "m", 128)
    assert settings.learning_rate == lr and settings.extra["defaults_from"] == source
    given = default_settings(sst, "m", 128, learning_rate=2e-5, epochs=1.0)
    assert (given.learning_rate, given.epochs) == (2e-5, 1.0) and "defaults_from" not in given.extra


@pytest.fixture
def easy_task(tmp_path):
    """A sentiment task any model learns at a sane learning rate and none at 1e-8: the text says its label."""
    rng = random.Random(0)
    folder = tmp_path / "tasks" / "chnsenticorp"
    folder.mkdir(parents=True)
    for split, n in (("train", 96), ("dev", 40)):
        rows = ["label\ttext_a"]
        for i in range(n):
            label = i % 2
            word = "好" if label else "差"
            filler = "".join(rng.choice("这个房间服务早餐位置价格") for _ in range(6))
            rows.append(f"{label}\t{filler}{word * 4}{filler}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tmp_path / "tasks"


@pytest.mark.slow  # real training: the full suite runs it, the edit-test loop does not
def test_grid_chooses_the_rate_that_learns_and_says_so(easy_task, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERTWWM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid"
    code = main(["finetune", "chnsenticorp", "--model", "random:tiny", "--out", str(out), "--seeds", "1",
                 "--data-dir", str(easy_task), "--lr-grid", "1e-8,1e-3", "--epochs", "4", "--batch-size", "8",
                 "--max-seq-length", "32", "--no-progress", "--no-save-model"])
    assert code == 0
    grid = json.loads((out / "grid.json").read_text())
    scores = {r["learning_rate"]: r["dev_mean"] for r in grid["grid"]}
    assert scores[1e-3] >= 90.0 and scores[1e-8] <= 75.0  # margins no float path can cross
    assert grid["chosen_learning_rate"] == 1e-3
    assert (out / "lr-0.001" / "results.jsonl").is_file() and (out / "lr-1e-08" / "results.jsonl").is_file()
    chosen = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["dev_score"] for r in chosen] == [scores[1e-3]]
    assert "lr grid: 0.001 won" in capsys.readouterr().err


def test_grid_and_lr_together_is_refused(easy_task, tmp_path, capsys):
    code = main(["finetune", "chnsenticorp", "--model", "random:tiny", "--out", str(tmp_path / "g"),
                 "--data-dir", str(easy_task), "--lr-grid", "1e-4,1e-3", "--lr", "1e-4"])
    assert code == 2 and "either --lr or --lr-grid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["finetune", "chnsenticorp", "--model", "random:tiny", "--out", str(tmp_path / "h"),
              "--lr-grid", "fast,slow"])
    with pytest.raises(Exception, match="positive"):
        finetune_grid("chnsenticorp", "random:tiny", tmp_path / "i", [0.0])


def test_every_setting_with_a_flag_is_one_option_of_the_command():
    """Settings is the one schema: its flagged fields are the command's options (dest = the keyword of
    finetune() = the key in run.json), each unset by default so that the task's default applies."""
    import argparse
    import dataclasses

    from bertwwm.finetune import Settings, add_arguments
    from bertwwm.finetune.settings import flagged_settings

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    flagged = flagged_settings()
    assert set(flagged) <= {f.name for f in dataclasses.fields(Settings)}
    for name, f in flagged.items():
        assert actions[name].option_strings == [f.metadata["flag"]] and actions[name].default is None
    assert [a.dest for a in parser._actions].count("learning_rate") == 1
    args = parser.parse_args(["xnli", "--model", "m", "--out", "o", "--lr", "1e-4", "--max-eval-examples", "5",
                              "--long-text", "window", "--warmup-proportion", "0.2"])
    assert (args.learning_rate, args.max_eval_examples, args.long_text, args.warmup_proportion) == (1e-4, 5, "window",
                                                                                                    0.2)
    settings = default_settings(get_task("xnli"), "m", **{name: getattr(args, name) for name in flagged})
    assert settings.learning_rate == 1e-4 and settings.epochs == get_task("xnli").epochs
    assert settings.warmup_proportion == 0.2 and settings.gradient_accumulation == 1  # unset: the field's default
    with pytest.raises(SystemExit):
        parser.parse_args(["xnli", "--model", "m", "--out", "o", "--long-text", "squeeze"])
