"""`bertwwm evaluate`: one JSON line in the official scales, from the official prediction layouts."""

from __future__ import annotations

import json

import pytest

from bertwwm import cli
from bertwwm.finetune.evaluate import evaluate_files
from bertwwm.tasks import readers


def _cli_json(capsys, argv):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    return json.loads(out[0])


def test_cmrc2018_em_f1_total_skip(shared_data, tmp_path, capsys):
    gold = shared_data / "tasks/cmrc2018/dev.json"
    examples = readers.read_squad(gold)
    preds = {e.qid: e.answers[0].text for e in examples[10:]}  # 10 unanswered
    preds[examples[10].qid] = ""  # one empty prediction
    first = examples[11].answers[0].text
    preds[examples[11].qid] = first + "以及更多的文字"  # one too long
    path = tmp_path / "pred.json"
    path.write_text(json.dumps(preds, ensure_ascii=False), encoding="utf-8")
    got = _cli_json(capsys, ["evaluate", "cmrc2018", "--gold", str(gold), "--predictions", str(path)])
    assert set(got) == {"em", "f1", "total", "skip"} and got["total"] == 3219 and got["skip"] == 10
    assert got["em"] == pytest.approx(100 * (3219 - 12) / 3219)
    # the long one: gold "11.42亿元" is [11.42 亿 元], the prediction 3 + 7 tokens: P 3/10, R 1 -> F1 6/13
    assert first == "11.42亿元"
    assert got["f1"] == pytest.approx(100 * (3219 - 12 + 6 / 13) / 3219)


def test_drcd_uses_the_same_script(shared_data, tmp_path, capsys):
    gold = shared_data / "tasks/drcd/DRCD_dev.json"
    examples = readers.read_squad(gold)
    readers.write_predictions(tmp_path / "p.json", "squad", {e.qid: e.answers[0].text for e in examples})
    got = _cli_json(capsys, ["evaluate", "drcd", "--gold", str(gold), "--predictions", str(tmp_path / "p.json")])
    assert got == {"em": 100.0, "f1": 100.0, "total": 3524, "skip": 0}


def test_cjrc(shared_data, tmp_path, capsys):
    gold = shared_data / "tasks/cjrc/dev.json"
    examples = readers.read_cjrc(gold)
    preds = {e.qid: ("" if e.kind == "unknown" else e.answers[0].text) for e in examples}
    readers.write_predictions(tmp_path / "p.json", "cjrc", preds)
    got = _cli_json(capsys, ["evaluate", "cjrc", "--gold", str(gold), "--predictions", str(tmp_path / "p.json")])
    assert got["overall"]["qas"] == 6000 and got["civil"]["qas"] + got["criminal"]["qas"] == 6000
    # the first reference scored against the others (leave-one-out) is below 100 but high
    assert 90 < got["overall"]["f1"] < 100 and got["skip"] == 0
    readers.write_predictions(tmp_path / "none.json", "cjrc", {})
    got = evaluate_files("cjrc", gold, tmp_path / "none.json")
    assert got["overall"] == {"em": 0.0, "f1": 0.0, "qas": 6000} and got["skip"] == 6000


def test_classification_and_errors(shared_data, tmp_path, capsys):
    gold = shared_data / "tasks/xnli/dev.tsv"
    labels = [e.label for e in readers.read_table(gold, ("text_a", "text_b", "label"))]
    preds = ["neutral"] * len(labels)
    readers.write_predictions(tmp_path / "p.tsv", "tsv", preds)
    got = _cli_json(capsys, ["evaluate", "xnli", "--gold", str(gold), "--predictions", str(tmp_path / "p.tsv")])
    assert got == {"accuracy": pytest.approx(100 * labels.count("neutral") / len(labels)), "total": 2490, "skip": 0}
    readers.write_predictions(tmp_path / "bad.tsv", "tsv", ["maybe"])
    assert cli.main(["evaluate", "xnli", "--gold", str(gold), "--predictions", str(tmp_path / "bad.tsv")]) == 2
    assert "not labels of xnli" in capsys.readouterr().err
    assert cli.main(["evaluate", "xnli", "--gold", str(tmp_path / "no.tsv"), "--predictions", "x"]) == 2
