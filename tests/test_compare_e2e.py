"""End to end on real images: ``cxr compare`` (2 folds, 1 epoch, 64 px), then ``cxr calibrate`` and subgroups."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cxrtriage.cli import main
from cxrtriage.config import ModelConfig
from cxrtriage.data.discover import discover
from cxrtriage.experiments.subgroups import subgroup_metrics
from cxrtriage.inference.predictor import Predictor
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.tasks import get_task


@pytest.fixture(scope="module")
def compare_dir(tiny_folder_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    rc = main(
        [
            "compare",
            "--task",
            "pneumonia",
            "--data",
            str(tiny_folder_dataset),
            "--archs",
            "cnn4,efficientnet_lite0",
            "--frozen",
            "efficientnet_lite0",
            "--k",
            "2",
            "--epochs",
            "1",
            "--image-size",
            "64",
            "--max-train-images",
            "32",
            "--inner-val-fraction",
            "0.5",
            "--n-boot",
            "50",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    return out


def test_compare_outputs(compare_dir):
    for name in ("compare.md", "compare.csv", "compare.json", "roc.png", "auroc_bars.png", "report.html"):
        assert (compare_dir / name).is_file(), name
    summary = json.loads((compare_dir / "compare.json").read_text())
    labels = [r["architecture"] for r in summary["rows"]]
    assert labels == ["cnn4", "efficientnet_lite0", "efficientnet_lite0 (frozen)"]
    md = (compare_dir / "compare.md").read_text()
    assert "`cxr compare --task pneumonia" in md and "--epochs 1" in md and "wall time" in md.lower()
    assert "64 px" in md
    html = (compare_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3
    for r in summary["results"]:
        assert 0.0 <= r["pooled"]["metrics"]["auroc"]["value"] <= 1.0
        assert len(r["folds"]) == 2
        assert r["budget"]["image_size"] == 64


def test_same_folds_for_every_architecture_and_no_patient_in_two_folds(compare_dir, tiny_folder_dataset):
    task = get_task("pneumonia")
    pid = {s.path: s.patient_id for s in discover(tiny_folder_dataset, task)}
    folds = {}
    for arch in ("cnn4", "efficientnet_lite0", "efficientnet_lite0-frozen"):
        with (compare_dir / arch / "oof.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 40  # every image predicted exactly once, out of fold
        folds[arch] = {r["path"]: r["fold"] for r in rows}
        by_patient = {}
        for r in rows:
            by_patient.setdefault(pid[r["path"]], set()).add(r["fold"])
        assert all(len(v) == 1 for v in by_patient.values())
    assert folds["cnn4"] == folds["efficientnet_lite0"] == folds["efficientnet_lite0-frozen"]


def test_calibrate_updates_model_config(compare_dir, tiny_folder_dataset):
    model_dir = compare_dir / "efficientnet_lite0" / "fold0"
    rc = main(["calibrate", "--model", str(model_dir), "--target-sensitivity", "0.9"])
    assert rc == 0
    cfg = ModelConfig.load(model_dir / "config.json")
    cal = ModelBundle.load(model_dir).calibration
    assert cfg.temperature == pytest.approx(cal.temperature) and cfg.temperature > 0
    assert cfg.threshold == pytest.approx(cal.threshold)
    assert "calibrated" in cfg.threshold_rule and "sensitivity:0.9" in cfg.threshold_rule
    assert cal.val_sensitivity >= 0.9
    assert (model_dir / "reliability.png").is_file()
    # The predictor applies the saved temperature.
    pred = Predictor(model_dir, threads=1)
    assert pred.config.temperature == pytest.approx(cal.temperature)


def test_subgroup_metrics_on_out_of_fold_predictions(compare_dir, tiny_folder_dataset):
    task = get_task("pneumonia")
    samples = {s.path: s for s in discover(tiny_folder_dataset, task)}
    with (compare_dir / "cnn4" / "oof.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ss = [samples[r["path"]] for r in rows]
    probs = np.array([[float(r["p_NORMAL"]), float(r["p_PNEUMONIA"])] for r in rows])
    cfg = ModelConfig(
        arch="cnn4",
        task="pneumonia",
        classes=list(task.classes),
        image_size=64,
        threshold=0.5,
        positive_class="PNEUMONIA",
    )
    res = subgroup_metrics(ss, probs, cfg, "patient_id", n_boot=20)
    assert sum(g["n"] for g in res["groups"].values()) == 40
    assert len(res["groups"]) == 8
    one = next(iter(res["groups"].values()))
    assert one["metrics"]["auroc"]["value"] is None  # one class per patient: AUROC undefined
    with pytest.raises(ValueError):
        subgroup_metrics(ss, probs, cfg, "nih_patient_sex")


def test_ship_writes_calibrated_model_with_card(tiny_folder_dataset, tmp_path):
    out = tmp_path / "zoo" / "pneumonia-tiny"
    rc = main(
        [
            "ship",
            "--task",
            "pneumonia",
            "--data",
            str(tiny_folder_dataset),
            "--image-size",
            "64",
            "--epochs",
            "1",
            "--test-fraction",
            "0.5",
            "--val-fraction",
            "0.5",
            "--n-boot",
            "20",
            "--quiet",
            "--run-dir",
            str(tmp_path / "run"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    bundle = ModelBundle.load(out)
    cfg = ModelConfig.load(out / "config.json")
    assert cfg.temperature == pytest.approx(bundle.calibration.temperature)
    assert cfg.threshold == pytest.approx(bundle.calibration.threshold)
    test_paths = set(bundle.split.test_paths_relative)
    val_paths = set(bundle.split.val_paths_relative)
    assert test_paths and not test_paths & val_paths
    assert bundle.split.n_train + bundle.split.n_val + bundle.split.n_test == 40
    assert "Research" in (out / "README.md").read_text()
    assert not (out / "checkpoints").exists()
