"""`bertwwm report`: "max (mean)" tables with the standard deviation, and the per-seed PNG."""

from __future__ import annotations

import json
import statistics

import pytest

from bertwwm import cli
from bertwwm.core.errors import UserError
from bertwwm.report import report, summarize


def _run(folder, model, task, dev, test=None):
    folder.mkdir(parents=True)
    rows = []
    for seed, d in enumerate(dev, 1):
        if task == "cmrc2018":
            r = {"task": task, "model": model, "seed": seed, "dev": {"em": d[0], "f1": d[1], "total": 10, "skip": 0}}
        else:
            r = {"task": task, "model": model, "seed": seed, "dev": {"accuracy": d, "total": 10, "skip": 0}}
            if test:
                r["test"] = {"accuracy": test[seed - 1], "total": 10, "skip": 0}
        rows.append(json.dumps(r))
    (folder / "results.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_summary_and_table(tmp_path):
    a = _run(tmp_path / "a", "bert-wwm", "chnsenticorp", [94.0, 95.5, 94.5], [94.8, 95.1, 95.0])
    b = _run(tmp_path / "b", "roberta-wwm-ext", "chnsenticorp", [95.0, 94.0], [95.8, 95.0])
    c = _run(tmp_path / "c", "bert-wwm", "cmrc2018", [(65.0, 84.0), (66.0, 85.5)])
    table, runs = report([a, b, c], tmp_path / "r.png")
    sa = runs[0][1]
    assert sa == summarize([json.loads(x) for x in (a / "results.jsonl").read_text().splitlines()])
    assert sa["dev"]["accuracy"]["max"] == 95.5 and sa["dev"]["accuracy"]["mean"] == pytest.approx(94.6666667)
    assert sa["dev"]["accuracy"]["std"] == pytest.approx(statistics.stdev([94.0, 95.5, 94.5]))
    assert "| bert-wwm | 3 | 95.5 (94.7) | 0.76 | 95.1 (95.0) | 0.15 |" in table
    assert "| roberta-wwm-ext | 2 | 95.0 (94.5) | 0.71 | 95.8 (95.4) | 0.57 |" in table
    assert "### CMRC 2018" in table and "| Model | Seeds | Dev EM | sd | Dev F1 | sd |" in table
    assert "| bert-wwm | 2 | 66.0 (65.5) | 0.71 | 85.5 (84.8) | 1.06 |" in table
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_and_errors(tmp_path, capsys):
    a = _run(tmp_path / "a", "m", "xnli", [70.0])
    assert cli.main(["report", str(a)]) == 0
    out = capsys.readouterr().out
    assert "| m | 1 | 70.0 (70.0) | 0.00 |" in out and (a / "report.png").is_file()
    assert cli.main(["report", str(a), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["dev"]["accuracy"]["values"] == [70.0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no finished seeds"):
        report([tmp_path / "empty"])
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
