"""``cxr train --select-metric`` then ``cxr calibrate`` and ``cxr card`` on real images (64 px, 2 epochs)."""

from __future__ import annotations

import csv
import json

import pytest

from cxrtriage.cli import main
from cxrtriage.config import ModelConfig
from cxrtriage.models.bundle import ModelBundle


@pytest.fixture(scope="module")
def trained(tiny_folder_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "model"
    rc = main(
        [
            "train",
            "--task",
            "pneumonia",
            "--data",
            str(tiny_folder_dataset),
            "--image-size",
            "64",
            "--epochs",
            "2",
            "--val-fraction",
            "0.4",
            "--select-metric",
            "macro_sensitivity",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_best_epoch_follows_the_selection_metric(trained):
    with (trained / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    scores = [float(r["val_macro_sensitivity"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    summary = ModelBundle.load(trained).training
    assert summary.select_metric == "macro_sensitivity"
    # ties keep the earlier epoch
    assert summary.best_epoch == scores.index(max(scores)) + 1


def test_card_needs_calibration_first(trained, tmp_path):
    import shutil

    d = tmp_path / "uncalibrated"
    shutil.copytree(trained, d)
    raw = json.loads((d / "bundle.json").read_text())
    raw.pop("calibration", None)
    (d / "bundle.json").write_text(json.dumps(raw))
    with pytest.raises(FileNotFoundError, match="calibration"):
        main(["card", "--model", str(d), "--training-command", "cxr train ...", "--n-boot", "20"])


def test_card_of_a_trained_model(trained, capsys):
    assert main(["calibrate", "--model", str(trained)]) == 0
    command = "cxr train --task pneumonia --data tiny --image-size 64 --epochs 2"
    assert main(["card", "--model", str(trained), "--training-command", command, "--n-boot", "50"]) == 0
    bundle = ModelBundle.load(trained)
    cfg = ModelConfig.load(trained / "config.json")
    cal = bundle.calibration
    ev = bundle.evaluation
    assert ev.command == command
    assert ev.test is None and bundle.split.n_test is None
    assert bundle.training.select_metric == "macro_sensitivity"
    assert cal.threshold == pytest.approx(cfg.threshold)
    assert cal.temperature == pytest.approx(cfg.temperature)
    # the card's validation figures are recomputed at the saved operating point: they match calibrate's
    assert ev.validation.value("sensitivity") == pytest.approx(cal.val_sensitivity)
    assert ev.validation.value("specificity") == pytest.approx(cal.val_specificity)
    md = (trained / "README.md").read_text()
    assert f"{cfg.threshold:.4f}" in md and f"T = {cfg.temperature:.4f}" in md
    assert "this card has no held-out test" in md and "held-out test (n=" not in md
    assert "by validation macro sensitivity" in md
    assert "validation auroc" in capsys.readouterr().out
