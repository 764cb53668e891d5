"""`bertwwm predict`: a fine-tuned folder runs on new data (no labels needed) in the official layouts."""

from __future__ import annotations

import json

import pytest

from bertwwm import cli, finetune as ft
from bertwwm.predict import predict
from bertwwm.tasks import readers


@pytest.fixture(scope="module")
def senti_run(tmp_path_factory, shared_data):
    from tests.test_finetune import make_tiny_model

    root = tmp_path_factory.mktemp("predict")
    model = make_tiny_model(root / "tiny", layers=1, hidden=64)
    dev = root / "dev.tsv"
    lines = (shared_data / "tasks/chnsenticorp/dev.tsv").read_text(encoding="utf-8").splitlines()
    dev.write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    ft.finetune("chnsenticorp", model, root / "run", seeds=1, train=str(shared_data / "tasks/chnsenticorp/train.tsv"),
                dev=str(dev), progress=False, max_seq_length=48, batch_size=16, epochs=1, learning_rate=5e-4,
                max_train_examples=64)
    return root, dev


def test_predict_matches_the_runs_dev_predictions(senti_run, tmp_path):
    root, dev = senti_run
    unlabeled = tmp_path / "new.tsv"
    unlabeled.write_text("".join(e.text_a + "\n" for e in readers.read_table(dev, ("label", "text_a"))),
                         encoding="utf-8")
    preds = predict("chnsenticorp", root / "run/best-model", unlabeled, tmp_path / "p.tsv")
    assert len(preds) == 40 and set(preds) <= {"0", "1"}
    assert (tmp_path / "p.tsv").read_text() == (root / "run/seed-1/dev_predictions.tsv").read_text()


def test_cli_stdout_and_errors(senti_run, tmp_path, capsys):
    root, dev = senti_run
    assert cli.main(["predict", "chnsenticorp", "--model", str(root / "run/best-model"), "--input", str(dev)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "index\tprediction" and len(out) == 41
    assert cli.main(["predict", "xnli", "--model", str(root / "run/best-model"), "--input", str(dev)]) == 2
    assert "fine-tuned for chnsenticorp, not xnli" in capsys.readouterr().err
    assert cli.main(["predict", "chnsenticorp", "--model", str(root / "tiny"), "--input", str(dev)]) == 2
    assert "not a fine-tuned model folder" in capsys.readouterr().err


def test_mrc_prediction_on_questions_without_answers(tmp_path, shared_data):
    from tests.test_finetune import make_tiny_model

    model = make_tiny_model(tmp_path / "tiny", layers=1, hidden=64)
    examples = readers.read_squad(shared_data / "tasks/drcd/DRCD_dev.json")[:40]
    readers.write_mrc(tmp_path / "train.json", examples)
    ft.finetune("drcd", model, tmp_path / "run", seeds=1, train=str(tmp_path / "train.json"),
                dev=str(tmp_path / "train.json"), progress=False, max_seq_length=128, batch_size=8, epochs=1,
                learning_rate=5e-4)
    for e in examples:
        e.answers = []
    readers.write_mrc(tmp_path / "new.json", examples)
    assert cli.main(["predict", "drcd", "--model", str(tmp_path / "run/best-model"), "--input",
                     str(tmp_path / "new.json"), "--out", str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert set(preds) == {e.qid for e in examples}
    by_id = {e.qid: e for e in examples}
    # every answer is a verbatim piece of its (traditional Chinese) context
    assert all(text in by_id[qid].context for qid, text in preds.items())
    assert preds == json.loads((tmp_path / "run/seed-1/dev_predictions.json").read_text(encoding="utf-8"))
