"""Fine-tuning: a tiny model learns ChnSentiCorp, the seed loop resumes, single-file tasks split, heads load back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bertwwm import cli, finetune as ft
from bertwwm.finetune import runs
from bertwwm.core.errors import UserError
from bertwwm.tasks import readers
from bertwwm.tasks.registry import get_task
from tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


QUICK = dict(max_seq_length=48, batch_size=16, epochs=1, learning_rate=5e-4, max_train_examples=64,
             max_eval_examples=32)


@pytest.mark.slow
def test_tiny_model_beats_the_majority_class(tiny, tmp_path, shared_data):
    data = shared_data / "tasks"
    results = ft.finetune("chnsenticorp", tiny, tmp_path / "run", seeds=1, data_dir=data, progress=False,
                          max_seq_length=64, batch_size=16, epochs=4, learning_rate=5e-4, max_train_examples=480,
                          max_eval_examples=300)
    full = get_task("chnsenticorp").read(data / "chnsenticorp/dev.tsv")
    dev = ft.stratified_sample(full, 300, [e.label for e in full])  # what --max-eval-examples 300 scores
    majority = 100 * Counter(e.label for e in dev).most_common(1)[0][1] / len(dev)
    r = results[0]
    assert r["dev"]["total"] == 300 and r["test"]["total"] == 300
    assert r["dev"]["accuracy"] > majority + 5, (r["dev"], majority)
    # the predictions file is the official layout, and scoring it again gives the same number
    from bertwwm.finetune.evaluate import evaluate_files

    gold = tmp_path / "dev300.tsv"
    readers.write_table(gold, dev)
    again = evaluate_files("chnsenticorp", gold, tmp_path / "run/seed-1/dev_predictions.tsv")
    assert again == r["dev"]
    log = [json.loads(x) for x in (tmp_path / "run/seed-1/train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == r["steps"] == 120 and log[-1]["lr"] == pytest.approx(0.0, abs=1e-9)
    # the best seed's model folder loads back with transformers and predicts the same
    from transformers import AutoModelForSequenceClassification

    back = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "run/best-model"))
    assert back.config.id2label == {0: "0", 1: "1"} and type(back).__name__ == "BertForSequenceClassification"


def test_seed_loop_resumes_and_keeps_finished_seeds(tiny, tmp_path, shared_data, monkeypatch):
    out = tmp_path / "run"
    real = ft.train_model
    assert runs.train_model is real  # the runner calls the loop's train_model: patch it where it is called
    trained = []

    def interrupted(model, data, settings, seed, *a, **k):
        if seed == 2:
            raise KeyboardInterrupt
        trained.append(seed)
        return real(model, data, settings, seed, *a, **k)

    monkeypatch.setattr(runs, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune("chnsenticorp", tiny, out, seeds=3, data_dir=shared_data / "tasks", progress=False, **QUICK)
    first = (out / "results.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x)["seed"] for x in first.splitlines()] == [1] and trained == [1]
    assert (out / "seed-2").is_dir()  # the interrupted seed left its folder; it starts over

    def counting(model, data, settings, seed, *a, **k):
        trained.append(seed)
        return real(model, data, settings, seed, *a, **k)

    monkeypatch.setattr(runs, "train_model", counting)
    results = ft.finetune("chnsenticorp", tiny, out, seeds=3, data_dir=shared_data / "tasks", progress=False, **QUICK)
    assert trained == [1, 2, 3] and [r["seed"] for r in results] == [1, 2, 3]
    assert (out / "results.jsonl").read_text(encoding="utf-8").startswith(first)  # seed 1 untouched
    # all seeds done: nothing is trained again
    ft.finetune("chnsenticorp", tiny, out, seeds=3, data_dir=shared_data / "tasks", progress=False, **QUICK)
    assert trained == [1, 2, 3]
    # other settings into the same folder: refused, nothing mixed
    with pytest.raises(UserError, match="learning_rate"):
        ft.finetune("chnsenticorp", tiny, out, seeds=3, data_dir=shared_data / "tasks", progress=False,
                    **{**QUICK, "learning_rate": 1e-4})


def test_task_without_train_file_is_split_deterministically(tmp_path, shared_data):
    task = get_task("lcqmc")
    s1 = ft.resolve_files(task, ft.default_settings(task, "m"), shared_data / "tasks", tmp_path / "a")
    s2 = ft.resolve_files(task, ft.default_settings(task, "m"), shared_data / "tasks", tmp_path / "b")
    assert "split" in s1.split_note and s1.train.endswith("train.tsv") and s1.test is None
    a_train, a_dev = task.read(s1.train), task.read(s1.dev)
    assert len(a_train) + len(a_dev) == 8802 and len(a_dev) == round(8802 * 0.2)
    assert [(e.text_a, e.text_b) for e in task.read(s2.dev)] == [(e.text_a, e.text_b) for e in a_dev]
    pairs = lambda xs: Counter((e.text_a, e.text_b, e.label) for e in xs)  # noqa: E731
    assert pairs(a_train) + pairs(a_dev) == pairs(task.read(shared_data / "tasks/lcqmc/dev.txt"))
    # MRC splits by passage: no context on both sides
    cj = get_task("cjrc")
    s = ft.resolve_files(cj, ft.default_settings(cj, "m"), shared_data / "tasks", tmp_path / "c")
    tr, dv = cj.read(s.train), cj.read(s.dev)
    assert len(tr) + len(dv) == 6000 and not {e.context for e in tr} & {e.context for e in dv}


def test_length_batches_cover_everything_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=3000)
    batches = ft.length_batches(lengths, 32, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(3000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(rng.permutation(3000), len(batches))
    padded_random = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.6 * padded_random
    evals = ft.length_batches(lengths, 32, None)
    assert sorted(np.concatenate(evals).tolist()) == list(range(3000))


@pytest.mark.slow  # real training: the full suite runs it, the edit-test loop does not
def test_cjrc_head_trains_saves_and_loads_back(tiny, tmp_path, shared_data):
    from bertwwm.tasks.heads import BertForCJRC, load_finetuned

    out = tmp_path / "cjrc"
    results = ft.finetune("cjrc", tiny, out, seeds=1, data_dir=shared_data / "tasks", progress=False,
                          max_seq_length=96, batch_size=8, epochs=1, learning_rate=5e-4, max_train_examples=48,
                          max_eval_examples=24)
    r = results[0]
    assert set(r["dev"]) == {"civil", "criminal", "overall", "skip"} and r["dev"]["overall"]["qas"] == 24
    preds = json.loads((out / "seed-1/dev_predictions.json").read_text(encoding="utf-8"))
    assert isinstance(preds, list) and len(preds) == 24 and set(preds[0]) == {"id", "answer"}
    model, tok, settings = load_finetuned(out / "best-model")
    assert isinstance(model, BertForCJRC) and settings["task"] == "cjrc" and len(tok) == 21128
    again = BertForCJRC.from_pretrained(str(out / "best-model")).eval()
    model.eval()
    x = {"input_ids": torch.tensor([[101, 2769, 102, 3221, 102]]), "token_type_ids": torch.tensor([[0, 0, 0, 1, 1]])}
    with torch.no_grad():
        assert torch.equal(model(**x).class_logits, again(**x).class_logits)


def test_cli_errors_exit_2(tmp_path, capsys, tiny):
    assert cli.main(["finetune", "squad", "--model", tiny, "--out", str(tmp_path / "x")]) == 2
    assert "unknown task" in capsys.readouterr().err
    assert cli.main(["finetune", "xnli", "--model", tiny, "--out", str(tmp_path / "x"),
                     "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "no train or dev file" in capsys.readouterr().err
    assert cli.main(["finetune", "xnli", "--model", tiny, "--out", str(tmp_path / "x"),
                     "--train", str(tmp_path / "missing.tsv")]) == 2
    assert "train file not found" in capsys.readouterr().err


def test_long_texts_as_windows_with_averaged_logits(tiny):
    from bertwwm.tasks.heads import load_pretrained
    from bertwwm.tasks.readers import TextExample

    task = get_task("thucnews")
    examples = [TextExample("a", "体育新闻" * 75, label="sports"), TextExample("b", "股票", label="stocks")]
    settings = ft.default_settings(task, tiny, max_seq_length=64, doc_stride=32, long_text="window")
    model, tok = load_pretrained(task, tiny)
    data = ft.Encoded(task, examples, tok, settings)
    # 300 tokens, windows of 62 content tokens starting 0, 32, ..., 256 -> 9 windows, then 1 for the short text
    assert data.example_index.tolist() == [0] * 9 + [1]
    assert all(len(x) <= 64 for x in data.input_ids) and data.labels["labels"].tolist() == [7] * 9 + [2]
    content = [x[1:-1] for x in data.input_ids[:9]]
    rebuilt = np.concatenate([content[i][:32] for i in range(8)] + [content[8]])
    assert rebuilt.tolist() == tok("体育新闻" * 75, add_special_tokens=False)["input_ids"]
    logits = np.stack(ft.run_model(model, data, 4, torch.device("cpu"))["logits"])
    preds = ft.predict_examples(task, model, data, settings, 4, torch.device("cpu"))
    assert preds == [task.labels[int(logits[:9].mean(0).argmax())], task.labels[int(logits[9].argmax())]]
    truncated = ft.Encoded(task, examples, tok, ft.default_settings(task, tiny, max_seq_length=64))
    assert len(truncated) == 2 and len(truncated.input_ids[0]) == 64


def test_roberta_wwm_style_checkpoint_loads_with_bert_classes(tiny, tmp_path, monkeypatch):
    """A checkpoint whose config says "roberta" and whose weights carry "roberta." prefixes (a RoBERTa-wwm
    model saved through the wrong class) still loads as BERT with its weights intact; a checkpoint missing
    encoder weights is refused instead of silently fine-tuning random weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    from bertwwm.modeling import zoo
    from bertwwm.tasks.heads import load_pretrained

    monkeypatch.setenv(zoo.CACHE_ENV, str(tmp_path / "cache"))  # the converted copy goes here, not to ~/.cache
    weights = load_file(str(Path(tiny) / "model.safetensors"))
    key = next(k for k in weights if "word_embeddings" in k)
    folder = tmp_path / "roberta-wwm-like"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update({"model_type": "roberta", "architectures": ["RobertaModel"]})
    (folder / "config.json").write_text(json.dumps(config))
    save_file({"roberta." + k.removeprefix("bert."): v for k, v in weights.items()}, str(folder / "model.safetensors"))
    model, tok = load_pretrained(get_task("xnli"), str(folder))
    assert type(model).__name__ == "BertForSequenceClassification" and len(tok) == 21128
    assert torch.equal(model.state_dict()["bert." + key.removeprefix("bert.")], weights[key])

    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    save_file({k: v for k, v in weights.items() if "layer.0.attention" not in k}, str(broken / "model.safetensors"))
    with pytest.raises(UserError, match="encoder weights are missing"):
        load_pretrained(get_task("xnli"), str(broken))


def test_thucnews_split_keeps_its_format(tmp_path, shared_data):
    task = get_task("thucnews")
    s = ft.resolve_files(task, ft.default_settings(task, "m", train=str(shared_data / "tasks/thucnews/dev.txt")),
                         None, tmp_path)
    assert s.train.endswith("train.txt") and (tmp_path / "data/class.txt").is_file()
    train, dev = task.read(s.train), task.read(s.dev)
    assert len(train) + len(dev) == 10000
    original = Counter((e.text_a, e.label) for e in task.read(shared_data / "tasks/thucnews/dev.txt"))
    assert Counter((e.text_a, e.label) for e in train + dev) == original


def test_cli_runs_and_prints_the_summary(tiny, tmp_path, shared_data, capsys):
    argv = ["finetune", "chnsenticorp", "--model", tiny, "--out", str(tmp_path / "run"), "--seeds", "2",
            "--data-dir", str(shared_data / "tasks"), "--max-train-examples", "32", "--max-eval-examples", "16",
            "--epochs", "1", "--batch-size", "16", "--max-seq-length", "32", "--no-progress", "--no-save-model"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    seeds = [json.loads(x) for x in lines[:-1]]
    summary = json.loads(lines[-1])
    assert [s["seed"] for s in seeds] == [1, 2] and summary["seeds"] == 2
    assert summary["dev"]["accuracy"]["values"] == [s["dev"]["accuracy"] for s in seeds]
    assert not (tmp_path / "run/best-model").exists()
    run = json.loads((tmp_path / "run/run.json").read_text())
    # a tiny model without --lr gets bertwwm's size defaults, not the report's 2e-5 for BERT-base
    assert run["learning_rate"] == 1e-3 and "hidden size <= 128" in run["extra"]["defaults_from"]
    assert run["warmup_proportion"] == 0.1 and run["max_seq_length"] == 32
    # the subsets are stratified samples, and both the output and run.json say so
    assert run["samples"]["dev"] == {"kept": 16, "of": 1200, "by": "label", "seed": ft.SPLIT_SEED,
                                     "note": run["samples"]["dev"]["note"]}
    assert run["samples"]["train"]["kept"] == 32 and run["samples"]["test"]["of"] == 1200
    assert "dev: a stratified sample of 16 of 1,200 examples (by label" in captured.err
    assert (tmp_path / "run/seed-2/tensorboard").is_dir()
    import bertwwm
    from bertwwm.tasks.registry import get_task

    for record in map(json.loads, (tmp_path / "run/results.jsonl").read_text(encoding="utf-8").splitlines()):
        assert record["bertwwm_version"] == bertwwm.__version__
        assert record["task_version"] == get_task("chnsenticorp").version


def _within_one(sample_groups, all_groups, n):
    """Every group's share of the sample is its share of the whole, give or take one."""
    have, total = Counter(sample_groups), Counter(all_groups)
    return all(abs(have[g] - n * c / len(all_groups)) < 1 for g, c in total.items())


def test_stratified_samples_keep_every_class_in_proportion(shared_data):
    # THUCNews' test file is sorted by class in blocks of 1,000: the first 500 rows would be one class
    sorted_rows = sorted(get_task("thucnews").read(shared_data / "tasks/thucnews/dev.txt"), key=lambda e: e.label)
    labels = [e.label for e in sorted_rows]
    for n in (500, 37, 10):
        sample = ft.stratified_sample(sorted_rows, n, labels)
        assert len(sample) == n and _within_one([e.label for e in sample], labels, n)
        assert len({e.label for e in sample}) == min(n, 10)
    again = ft.stratified_sample(sorted_rows, 500, labels)
    assert [e.guid for e in again] == [e.guid for e in ft.stratified_sample(sorted_rows, 500, labels)]
    other = ft.stratified_sample(sorted_rows, 500, labels, seed=7)
    assert [e.guid for e in other] != [e.guid for e in again]
    position = {id(e): i for i, e in enumerate(sorted_rows)}
    assert [position[id(e)] for e in again] == sorted(position[id(e)] for e in again)  # file order
    assert ft.stratified_sample(sorted_rows[:5], 9, labels[:5]) == sorted_rows[:5]


def test_eval_subsets_by_domain_and_by_article(shared_data):
    cjrc = get_task("cjrc")
    questions = cjrc.read(shared_data / "tasks/cjrc/dev.json")
    samples: dict = {}
    kept = ft.limit_examples(cjrc, "dev", questions, 500, samples)
    assert len(kept) == 500 and _within_one([e.domain for e in kept], [e.domain for e in questions], 500)
    assert samples["dev"]["by"] == "domain" and "500 of 6,000 questions" in samples["dev"]["note"]
    cmrc = get_task("cmrc2018")
    questions = cmrc.read(shared_data / "tasks/cmrc2018/dev.json")
    kept = ft.limit_examples(cmrc, "test", questions, 800, samples)
    assert _within_one([e.article for e in kept], [e.article for e in questions], 800)
    assert samples["test"]["by"] == "article" and ft.limit_examples(cmrc, "dev", questions, None, samples) is questions


def test_empty_cjrc_domain_is_not_scored_as_zero(shared_data):
    from bertwwm.report import render_tables, summarize
    from bertwwm.tasks import metrics

    civil = [e for e in get_task("cjrc").read(shared_data / "tasks/cjrc/dev.json") if e.domain == "civil"][:20]
    scores = metrics.cjrc_scores(civil, {e.qid: e.answers[0].text if e.answers else "" for e in civil})
    assert scores["criminal"] == {"em": None, "f1": None, "qas": 0} and scores["civil"]["qas"] == 20
    record = {"task": "cjrc", "model": "m", "seed": 1, "dev": scores, "dev_score": 100.0}
    assert summarize([record])["dev"]["overall/f1"]["max"] == scores["overall"]["f1"]
    empty = {**record, "dev": {"civil": scores["civil"], "overall": {"em": None, "f1": None, "qas": 0}}}
    table = render_tables([("m", summarize([empty]))])
    assert "| m | 1 | – | – | – | – |" in table


def test_no_progress_silences_transformers_bars_too(tiny, tmp_path, shared_data, capsys):
    from transformers.utils import logging as hf_logging

    bars = ("Loading weights", "Writing model shards", "seed 1:", "eval:")
    argv = ["finetune", "chnsenticorp", "--model", tiny, "--seeds", "1", "--data-dir", str(shared_data / "tasks"),
            "--max-train-examples", "16", "--max-eval-examples", "8", "--epochs", "1", "--batch-size", "8",
            "--max-seq-length", "32"]
    hf_logging.enable_progress_bar()
    try:
        assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
        shown = capsys.readouterr().err
        assert all(bar in shown for bar in bars), shown  # what --no-progress has to hide
        assert cli.main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
        assert not any(bar in capsys.readouterr().err for bar in bars)
        few = tmp_path / "few.tsv"
        lines = (shared_data / "tasks/chnsenticorp/dev.tsv").read_text(encoding="utf-8").splitlines()[:21]
        few.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert cli.main(["predict", "chnsenticorp", "--model", str(tmp_path / "b/best-model"), "--input",
                         str(few), "--out", str(tmp_path / "p.tsv"), "--no-progress"]) == 0
        assert not any(bar in capsys.readouterr().err for bar in bars)
    finally:
        hf_logging.enable_progress_bar()
