"""Fine-tuning: a tiny model learns ChnSentiCorp, the seed loop resumes, single-file tasks split, heads load back."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from bertwwm import cli, finetune as ft
from bertwwm.errors import UserError
from bertwwm.tasks.registry import get_task


def make_tiny_model(folder, layers=2, hidden=128):
    from transformers import BertConfig, BertModel

    from bertwwm.tokens import save_tokenizer

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(config).save_pretrained(str(folder))
    save_tokenizer(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


QUICK = dict(max_seq_length=48, batch_size=16, epochs=1, learning_rate=5e-4, max_train_examples=64,
             max_eval_examples=32)


def test_tiny_model_beats_the_majority_class(tiny, tmp_path, shared_data):
    data = shared_data / "tasks"
    results = ft.finetune("chnsenticorp", tiny, tmp_path / "run", seeds=1, data_dir=data, progress=False,
                          max_seq_length=64, batch_size=16, epochs=4, learning_rate=5e-4, max_train_examples=480,
                          max_eval_examples=300)
    dev = get_task("chnsenticorp").read(data / "chnsenticorp/dev.tsv")[:300]
    majority = 100 * Counter(e.label for e in dev).most_common(1)[0][1] / len(dev)
    r = results[0]
    assert r["dev"]["total"] == 300 and r["test"]["total"] == 300
    assert r["dev"]["accuracy"] > majority + 5, (r["dev"], majority)
    # the predictions file is the official layout, and scoring it again gives the same number
    from bertwwm.evaluate import evaluate_files

    gold = tmp_path / "dev300.tsv"
    gold.write_text("".join(line + "\n" for line in
                            (data / "chnsenticorp/dev.tsv").read_text(encoding="utf-8").splitlines()[:301]),
                    encoding="utf-8")
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
    trained = []

    def interrupted(model, data, settings, seed, *a, **k):
        if seed == 2:
            raise KeyboardInterrupt
        trained.append(seed)
        return real(model, data, settings, seed, *a, **k)

    monkeypatch.setattr(ft, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune("chnsenticorp", tiny, out, seeds=3, data_dir=shared_data / "tasks", progress=False, **QUICK)
    first = (out / "results.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x)["seed"] for x in first.splitlines()] == [1] and trained == [1]
    assert (out / "seed-2").is_dir()  # the interrupted seed left its folder; it starts over

    def counting(model, data, settings, seed, *a, **k):
        trained.append(seed)
        return real(model, data, settings, seed, *a, **k)

    monkeypatch.setattr(ft, "train_model", counting)
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
