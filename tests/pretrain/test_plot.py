"""`bertwwm plot` reads metrics.jsonl and draws both splits' curves into a real PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bertwwm.cli import main
from bertwwm.core.errors import UserError
from bertwwm.pretrain.plot import plot_run, read_metrics


def _write_run(folder):
    folder.mkdir()
    records = []
    for step in range(10, 210, 10):
        records.append({"step": step, "phase": 1, "split": "train", "mlm_loss": 10.0 * 0.99 ** step,
                        "mlm_acc": step / 400, "nsp_loss": 0.69, "nsp_acc": 0.5, "lr": 1e-4})
        if step % 50 == 0:
            records.append({"step": step, "phase": 1, "split": "eval", "mlm_loss": 11.0 * 0.99 ** step,
                            "mlm_acc": step / 500})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


def test_read_metrics_splits_and_series(tmp_path):
    records = _write_run(tmp_path / "run")
    data = read_metrics(tmp_path / "run")
    assert set(data) == {"train", "eval"}
    steps, values = data["eval"]["mlm_loss"]
    assert steps == [50, 100, 150, 200]
    assert values == pytest.approx([r["mlm_loss"] for r in records if r["split"] == "eval"])
    assert len(data["train"]["mlm_acc"][0]) == 20 and "nsp_loss" not in data["eval"]


def test_plot_writes_a_png_with_curves(tmp_path):
    import matplotlib.image

    _write_run(tmp_path / "run")
    png = plot_run(tmp_path / "run")
    assert png == tmp_path / "run" / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 800
    colours = np.unique(pixels[..., :3].reshape(-1, 3).round(2), axis=0)
    assert len(colours) > 20  # lines, legend and text were drawn, not a blank canvas
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_plot_errors_are_clear(tmp_path, capsys):
    with pytest.raises(UserError, match="no metrics file"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(UserError) as e:
        read_metrics(tmp_path)
    assert e.value.line == 2
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
