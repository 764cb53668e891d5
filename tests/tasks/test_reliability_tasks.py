"""Bad inputs of the downstream verbs and damaged model files: `evaluate` predictions that are not answers,
duplicate or out-of-range ids, a JSON file handed to a table task, CMRC answers missing from their context,
truncated safetensors given to `fill-mask` / `pretrain --init` / `finetune --model`, a text file or a
malicious pickle named pytorch_model.bin. Each is exit 2 with one line naming the file (and line)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from bertwwm.cli import main
from reference import one_clear_line as _one_clear_line
from bertwwm.core.errors import UserError
from bertwwm.tasks import readers
from bertwwm.tasks.registry import get_task


def _cmrc_gold(tmp_path: Path) -> Path:
    gold = {"version": "v1", "data": [{"title": "t", "paragraphs": [{"id": "p1", "context": "北京是中国的首都。", "qas": [
        {"id": "q1", "question": "中国的首都是哪里？", "answers": [{"text": "北京", "answer_start": 0}]},
        {"id": "q2", "question": "北京是哪国的首都？", "answers": [{"text": "中国", "answer_start": 3}]}]}]}]}
    path = tmp_path / "gold.json"
    path.write_text(json.dumps(gold, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize("answer", ["123", "null", '["北京"]', '{"text": "北京"}'])
def test_cmrc_answers_that_are_not_strings_are_refused(tmp_path, capsys, answer):
    predictions = tmp_path / "predictions.json"
    predictions.write_text('{\n  "q1": ' + answer + ',\n  "q2": "中国"\n}\n', encoding="utf-8")
    assert main(["evaluate", "cmrc2018", "--gold", str(_cmrc_gold(tmp_path)), "--predictions", str(predictions)]) == 2
    _one_clear_line(capsys.readouterr().err, "evaluate", f"{predictions}:2:", "'q1'", "must be a string")


def test_string_answers_are_scored(tmp_path, capsys):
    predictions = tmp_path / "predictions.json"
    predictions.write_text('{"q1": "北京", "q2": "日本"}', encoding="utf-8")
    assert main(["evaluate", "cmrc2018", "--gold", str(_cmrc_gold(tmp_path)), "--predictions", str(predictions)]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["em"] == pytest.approx(50.0) and scores["skip"] == 0


def test_duplicate_prediction_ids_are_errors_with_their_line(tmp_path, capsys):
    gold = _cmrc_gold(tmp_path)
    predictions = tmp_path / "predictions.json"
    predictions.write_text('{\n  "q1": "北京",\n  "q2": "中国",\n  "q1": "上海"\n}\n', encoding="utf-8")
    assert main(["evaluate", "cmrc2018", "--gold", str(gold), "--predictions", str(predictions)]) == 2
    _one_clear_line(capsys.readouterr().err, "evaluate", f"{predictions}:4:", "duplicate id 'q1'")
    cjrc = tmp_path / "cjrc.json"
    cjrc.write_text('[\n{"id": "a", "answer": "YES"},\n{"id": "a", "answer": "NO"}\n]\n', encoding="utf-8")
    with pytest.raises(UserError, match="duplicate id 'a'") as e:
        readers.read_predictions(cjrc, "cjrc")
    assert e.value.line == 3


def test_classification_indices_duplicate_or_out_of_range_name_their_line(shared_data, tmp_path, capsys):
    gold = tmp_path / "dev.tsv"
    gold.write_text("label\ttext_a\n1\t很好\n0\t很差\n1\t不错\n", encoding="utf-8")
    predictions = tmp_path / "predictions.tsv"
    predictions.write_text("index\tprediction\n0\t1\n1\t0\n1\t1\n", encoding="utf-8")
    assert main(["evaluate", "chnsenticorp", "--gold", str(gold), "--predictions", str(predictions)]) == 2
    _one_clear_line(capsys.readouterr().err, "evaluate", f"{predictions}:4:", "duplicate index 1")
    predictions.write_text("index\tprediction\n0\t1\n1\t0\n3\t1\n", encoding="utf-8")
    assert main(["evaluate", "chnsenticorp", "--gold", str(gold), "--predictions", str(predictions)]) == 2
    _one_clear_line(capsys.readouterr().err, "evaluate", f"{predictions}:4:", "index 3 is out of range", "3 examples")
    predictions.write_text("index\tprediction\n0\t1\n2\t0\n", encoding="utf-8")  # a gap is a skip, not an error
    assert main(["evaluate", "chnsenticorp", "--gold", str(gold), "--predictions", str(predictions)]) == 0
    assert json.loads(capsys.readouterr().out)["skip"] == 1


def test_a_json_file_given_to_a_table_task_is_refused(shared_data):
    cmrc = shared_data / "tasks" / "cmrc2018" / "dev.json"
    for task in ("chnsenticorp", "lcqmc", "thucnews"):
        with pytest.raises(UserError, match="this is a JSON file") as e:
            get_task(task).read(cmrc, require_labels=False)
        assert e.value.path == str(cmrc)


def test_training_answers_missing_from_their_context_are_dropped_and_counted(tmp_path):
    gold = json.loads(_cmrc_gold(tmp_path).read_text(encoding="utf-8"))
    gold["data"][0]["paragraphs"][0]["qas"][1]["answers"] = [{"text": "上海", "answer_start": 3}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(gold, ensure_ascii=False), encoding="utf-8")
    kept, dropped = readers.drop_unanchored(readers.read_squad(path))
    assert [e.qid for e in kept] == ["q1"] and dropped == 1


# ------------------------------------------------------------------------------------------ model files


@pytest.fixture(scope="module")
def hf_model(shared_data, tmp_path_factory) -> Path:
    from bertwwm.convert import tf_to_hf

    out = tmp_path_factory.mktemp("model") / "tiny"
    tf_to_hf(shared_data / "checkpoints" / "tiny-bert-tf" / "bert_model.ckpt", out)
    return out


@pytest.fixture
def truncated(hf_model, tmp_path) -> Path:
    folder = tmp_path / "truncated-model"
    shutil.copytree(hf_model, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return folder


def test_a_truncated_model_is_named_by_fill_mask(truncated, capsys, private_cache):
    assert main(["fill-mask", str(truncated), "北京是中国的[MASK]都。"]) == 2
    _one_clear_line(capsys.readouterr().err, "fill-mask", str(truncated / "model.safetensors"), "truncated")


def test_a_truncated_model_is_named_by_pretrain_init(truncated, tmp_path, capsys, private_cache):
    data = tmp_path / "data"  # an (empty) data folder exists: the model is checked before the data is read
    data.mkdir()
    assert main(["pretrain", "--recipe", "tiny-cpu", "--init", str(truncated), "--data", str(data),
                 "--out", str(tmp_path / "run")]) == 2
    _one_clear_line(capsys.readouterr().err, "pretrain", str(truncated / "model.safetensors"), "truncated")
    assert not (tmp_path / "run").exists()


def test_a_truncated_model_is_named_by_finetune(truncated, shared_data, tmp_path, capsys, private_cache):
    assert main(["finetune", "chnsenticorp", "--model", str(truncated), "--out", str(tmp_path / "ft"),
                 "--data-dir", str(shared_data / "tasks"), "--seeds", "1", "--no-progress"]) == 2
    _one_clear_line(capsys.readouterr().err, "finetune", str(truncated / "model.safetensors"), "truncated")


def test_legacy_bin_that_is_text_or_a_malicious_pickle_is_refused(tiny_tf, tmp_path, capsys, private_cache):
    folder = tmp_path / "legacy"
    folder.mkdir()
    shutil.copy(tiny_tf / "bert_config.json", folder)
    shutil.copy(tiny_tf / "vocab.txt", folder)
    weights = folder / "pytorch_model.bin"
    weights.write_text("this is not a PyTorch file\n", encoding="utf-8")
    assert main(["convert", "legacy-bin", str(folder), str(tmp_path / "out")]) == 2
    _one_clear_line(capsys.readouterr().err, "convert", str(weights), "not a PyTorch file")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, weights)
    assert main(["convert", "legacy-bin", str(folder), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    _one_clear_line(err, "convert", str(weights), "never runs code")
    assert "weights_only" not in err and not marker.exists() and not (tmp_path / "out").exists()
