"""benchmarks/ablation.py: the corpus split, the settings guard, the statistics over pretraining seeds, and
(slow) one whole run end to end with a rerun that resumes."""

from __future__ import annotations

import gzip
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_script", REPO / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_corpus(path: Path, n_docs: int, gz: bool = False) -> Path:
    text = "\n".join(f"第{i}号文件。\n这是第{i}个文档的第二行。\n" for i in range(n_docs))
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_issue_s(ablation):
    args = ablation.parse_args([])
    assert args.models == ("tiny",) and args.policies == ("wwm", "char", "ngram")
    assert args.pretrain_seed_list == [12345, 12346, 12347] and args.seeds >= 3
    assert args.budget_seconds == 240 and args.steps is None
    assert args.epochs is None and args.finetune_lr is None  # finetune's size defaults
    assert args.subsets == {"chnsenticorp": (1000, None), "cmrc2018": (300, 500)}


def test_arguments_override_and_refuse(ablation):
    args = ablation.parse_args(["--time-budget", "1m30s", "--pretrain-seeds", "2", "--seed", "7",
                                "--max-train-examples", "0", "--max-eval-examples", "32"])
    assert args.budget_seconds == 90 and args.pretrain_seed_list == [7, 8]
    assert args.subsets == {"chnsenticorp": (None, 32), "cmrc2018": (None, 32)}  # 0: all
    for bad in (["--time-budget", "soon"], ["--pretrain-seeds", "0"], ["--policies", "wwm,bpe"]):
        with pytest.raises(SystemExit):
            ablation.parse_args(bad)


def test_corpus_split_holds_out_whole_documents(ablation, tmp_path):
    a = write_corpus(tmp_path / "a.txt.gz", 120, gz=True)
    b = write_corpus(tmp_path / "b.txt", 60)
    args = ablation.parse_args(["--corpus", str(a), str(b)])
    train, heldout = ablation.split_corpus(args, tmp_path / "out")
    held = heldout.read_text(encoding="utf-8").split("\n\n")
    kept = train.read_text(encoding="utf-8").split("\n\n")
    # every 50th document of each file, starting with the 8th: a's 7, 57, 107 and b's 7, 57
    firsts = [d.split("\n")[0] for d in held]
    assert firsts == ["第7号文件。", "第57号文件。", "第107号文件。", "第7号文件。", "第57号文件。"]
    assert len(kept) == 180 - 5
    trained = train.read_text(encoding="utf-8")
    assert "第7号文件" not in trained and "第57号文件" not in trained and "第8号文件" in trained
    assert all(d.count("\n") >= 1 for d in held)  # documents stay whole


def test_corpus_chars_take_a_share_of_every_file(ablation, tmp_path):
    a = write_corpus(tmp_path / "a.txt", 400)
    b = write_corpus(tmp_path / "b.txt", 400)
    doc = len("第100号文件。\n这是第100个文档的第二行。\n")
    args = ablation.parse_args(["--corpus", str(a), str(b), "--corpus-chars", str(2 * 100 * doc)])
    train, heldout = ablation.split_corpus(args, tmp_path / "out")
    text = train.read_text(encoding="utf-8") + heldout.read_text(encoding="utf-8")
    assert 180 <= text.count("号文件") <= 220  # about 100 documents of each file
    assert "第99号文件" in text and "第150号文件" not in text


def test_too_few_documents_is_a_clear_error(ablation, tmp_path):
    from bertwwm.core.errors import UserError

    args = ablation.parse_args(["--corpus", str(write_corpus(tmp_path / "a.txt", 5))])
    with pytest.raises(UserError, match="too few documents"):
        ablation.split_corpus(args, tmp_path / "out")


def test_settings_guard_refuses_other_settings_and_allows_more(ablation, tmp_path):
    from bertwwm.core.errors import UserError

    ablation.check_settings(ablation.parse_args(["--tasks", "chnsenticorp"]), tmp_path)
    ablation.check_settings(ablation.parse_args(["--tasks", "chnsenticorp,cmrc2018", "--pretrain-seeds", "5"]),
                            tmp_path)  # more tasks and seeds continue the same ablation
    with pytest.raises(UserError, match="time_budget_s"):
        ablation.check_settings(ablation.parse_args(["--time-budget", "5m"]), tmp_path)
    with pytest.raises(UserError, match="chnsenticorp_examples"):
        ablation.check_settings(ablation.parse_args(["--max-train-examples", "64"]), tmp_path)


def summary(values: list[float]) -> dict:
    from bertwwm.report import summarize

    return summarize([{"task": "chnsenticorp", "model": "m", "seed": k, "dev": {"accuracy": v}}
                      for k, v in enumerate(values)])


def test_combine_reports_the_spread_over_pretraining_seeds(ablation):
    per_seed = {1: summary([80.0, 82.0]), 2: summary([70.0, 74.0]), 3: summary([90.0, 90.0])}
    s = ablation.combine(per_seed)["accuracy"]
    assert s["seed_means"] == [81.0, 72.0, 90.0]
    assert s["mean"] == pytest.approx(81.0) and s["max"] == 90.0 and s["n"] == 6
    assert s["sd_pretrain_seeds"] == pytest.approx(statistics.stdev([81.0, 72.0, 90.0]))
    # pooled within-seed sd: squares (1+1) + (4+4) + 0 over 3 degrees of freedom
    assert s["sd_finetune_seeds"] == pytest.approx((10 / 3) ** 0.5)
    assert (s["pretrain_seeds"], s["finetune_seeds"]) == (3, 2)


def test_tables_label_the_control_and_say_what_the_cells_are(ablation):
    rows = [{"model": "tiny", "policy": p, "task": "chnsenticorp",
             "stats": ablation.combine({1: summary([80.0, 81.0]), 2: summary([79.0, 80.0])})}
            for p in ("wwm", ablation.RANDOM_INIT)]
    table = ablation.finetune_tables(rows)
    assert "| tiny wwm | 2 x 2 | 81.0 (80.0) | 0.71 | 0.71 |" in table
    assert "tiny (random init)" in table and "sd pretrain seeds" in table
    runs = [{"model": "tiny", "policy": "wwm", "seed": s, "steps": 100 * s,
             "heldout": {"mlm_loss": 5.0, "mlm_acc": 0.1 * s, "unigram_loss": 6.0},
             "common": {p: {"mlm_acc": 0.1} for p in ablation.COMMON_MASKS}} for s in (1, 2)]
    assert "| tiny wwm | 2 | 150 ± 71 | 5.000 ± 0.000 | 0.150 ± 0.071 | 6.000 ± 0.000 |" in \
        ablation.pretraining_table(runs)


@pytest.mark.slow
def test_a_tiny_ablation_runs_and_resumes(ablation, tmp_path, resources, capsys):
    """Two pretraining seeds of two policies for 2 steps each, fine-tuned on 8 examples: results.md, the PNG
    and the JSON line; a rerun reuses everything."""
    argv = ["--steps", "2", "--pretrain-seeds", "2", "--seeds", "1", "--policies", "wwm,char",
            "--corpus", str(resources / "corpus" / "prc-laws-sample.txt.gz"), "--corpus-chars", "400000",
            "--task-data-dir", str(resources / "tasks"), "--max-train-examples", "8", "--max-eval-examples", "8",
            "--cmrc-max-seq-length", "128", "--workers", "1", "--threads", "1", "--no-progress",
            "--out", str(tmp_path / "abl"), "--docs", str(tmp_path / "docs")]
    assert ablation.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cases = {(c["policy"], c["task"], c["metric"]): c for c in result["cases"]}
    assert set(cases) == {(p, t, m) for p in ("wwm", "char", "random-init")
                          for t, m in (("chnsenticorp", "accuracy"), ("cmrc2018", "em"), ("cmrc2018", "f1"))}
    assert all(c["pretrain_seeds"] == 2 and c["n"] == 2 and len(c["seed_means"]) == 2 for c in cases.values())
    runs = {(r["policy"], r["seed"]): r for r in result["pretraining"]}
    assert set(runs) == {(p, s) for p in ("wwm", "char", "random-init") for s in (12345, 12346)}
    wwm = runs[("wwm", 12345)]
    assert wwm["steps"] == 2 and {"mlm_loss", "mlm_acc", "unigram_loss"} <= set(wwm["heldout"])
    # the common whole-word masks are the ones a wwm run is evaluated on: the same numbers
    assert wwm["common"]["wwm"]["mlm_loss"] == pytest.approx(wwm["heldout"]["mlm_loss"], rel=1e-5)
    text = (tmp_path / "docs" / "results.md").read_text(encoding="utf-8")
    assert "tiny (random init)" in text and "--steps 2" in text
    assert (tmp_path / "docs" / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert ablation.main(argv) == 0  # everything reused
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["cases"] == result["cases"]
