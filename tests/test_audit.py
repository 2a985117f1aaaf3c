"""Shortcut audit (``cxr audit``): segmenter lung masks, hidden-lungs machinery, source probe, CLI and bundle section."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from cxrtriage.config import ConfigKeyError
from cxrtriage.data.cache import resize_gray
from cxrtriage.data.io import read_image
from cxrtriage.explain.lungs import hide_region
from cxrtriage.metrics.audit import mass_in_mask, mean_estimate, source_probe
from cxrtriage.models.bundle import AuditSection, ModelBundle, zoo_dir
from cxrtriage.segment import load_segmenter

PNEUMONIA = zoo_dir() / "pneumonia-efficientnet_lite0"


def _real_images(data: Path, n: int, size: int = 224) -> list[np.ndarray]:
    with (data / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    step = max(1, len(rows) // n)
    return [resize_gray(read_image(data / r["path"]), size) for r in rows[::step][:n]]


def _two_ellipses(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    left = ((xx - 0.3 * w) / (0.15 * w)) ** 2 + ((yy - 0.48 * h) / (0.3 * h)) ** 2 <= 1
    right = ((xx - 0.7 * w) / (0.15 * w)) ** 2 + ((yy - 0.48 * h) / (0.3 * h)) ** 2 <= 1
    return left | right


def _lung_masks(images) -> np.ndarray:
    masks = load_segmenter().segment_batch(list(images))
    assert not any(m.failed for m in masks), [m.reason for m in masks if m.failed]
    return np.stack([m.mask for m in masks])


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", ["kermany-pneumonia", "covid19-radiography", "ieee8023-cxr"])
def test_segmenter_lung_masks_are_plausible_on_real_images(shared_data_dir, dataset):
    images = _real_images(shared_data_dir / dataset, 12)
    masks = _lung_masks(images)
    areas = []
    for img, m in zip(images, masks):
        assert m.dtype == bool and m.shape == img.shape
        labels, n = ndimage.label(m)
        assert n == 2, f"{dataset}: {n} components"
        cx = [np.nonzero(labels == k)[1].mean() for k in (1, 2)]
        assert min(cx) < img.shape[1] / 2 < max(cx)  # one lung either side of the midline
        areas.append(m.mean())
    assert all(0.08 <= a <= 0.45 for a in areas), areas
    assert np.array_equal(masks, _lung_masks(images))  # deterministic


def test_hide_region_rejects_bad_input_and_fills():
    img = np.arange(64 * 64, dtype=np.int64).reshape(64, 64).astype(np.uint8)
    with pytest.raises(ValueError, match="same"):
        hide_region(img, np.zeros((32, 32), bool))
    with pytest.raises(ValueError, match="fill"):
        hide_region(img, np.zeros((64, 64), bool), fill="black")  # type: ignore[arg-type]
    t = _two_ellipses((64, 64))
    hidden = hide_region(img, t, "grey")
    assert (hidden[t] == 128).all() and np.array_equal(hidden[~t], img[~t])
    assert (hide_region(img, t, "mean")[t] == round(float(img.mean()))).all()


def test_mass_in_mask_and_mean_estimate():
    mask = _two_ellipses((32, 32))
    assert mass_in_mask(np.ones((32, 32)), mask) == pytest.approx(mask.mean())
    assert mass_in_mask(mask.astype(float), mask) == pytest.approx(1.0)
    assert np.isnan(mass_in_mask(-np.ones((32, 32)), mask))
    est = mean_estimate([0.2, 0.4, float("nan"), 0.6], n_boot=200)
    assert est.value == pytest.approx(0.4)
    assert est.ci95 is not None and 0.2 <= est.ci95[0] <= 0.4 <= est.ci95[1] <= 0.6
    assert mean_estimate([float("nan")]).value is None


def test_source_probe_finds_a_source_shift_and_not_noise():
    rng = np.random.default_rng(0)
    n = 120
    sources = np.array(["a", "b"] * (n // 2))
    groups = [f"p{i // 2}" for i in range(n)]  # two images per patient, one per source
    x = rng.normal(size=(n, 20))
    shifted = x + (sources == "b")[:, None] * 1.5
    hit = source_probe(shifted, sources, groups, n_boot=200)
    assert hit.auroc.value is not None and hit.auroc.value > 0.95
    assert hit.counts == {"a": 60, "b": 60} and hit.n_splits == 5
    noise = source_probe(x, sources, groups, n_boot=200)
    assert noise.auroc.value is not None and noise.auroc.ci95 is not None
    assert noise.auroc.ci95[0] < 0.5 + 0.15 and noise.auroc.value < 0.7
    three = source_probe(shifted, np.array(["a", "b", "c"] * (n // 3)), groups, n_boot=0)
    assert three.sources == ["a", "b", "c"] and three.auroc.ci95 is None
    with pytest.raises(ValueError, match="two sources"):
        source_probe(x, ["a"] * n, groups)


@pytest.mark.shared_data
def test_hidden_lungs_machinery_on_a_corner_marker(kermany_dir):
    """Class written only in a corner marker: visible with the lungs hidden, gone with only the lungs kept."""
    from cxrtriage.experiments.audit import hidden_lung_reports

    cfg = ModelBundle.load(PNEUMONIA).config
    images = np.stack(_real_images(kermany_dir, 16))
    y = np.arange(16) % 2
    images[:, :16, :16] = np.where(y[:, None, None] == 1, 255, 0).astype(np.uint8)
    masks = _lung_masks(images)
    assert not masks[:, :16, :16].any()

    def corner_score(imgs: np.ndarray) -> np.ndarray:
        p = imgs[:, :16, :16].mean(axis=(1, 2)) / 255.0
        return np.stack([1 - p, p], axis=1)

    reports = hidden_lung_reports(images, masks, y, corner_score, cfg, fill="grey", n_boot=100)
    assert reports["original"].value("auroc") == pytest.approx(1.0)
    assert reports["lungs_hidden"].value("auroc") == pytest.approx(1.0)
    assert reports["lungs_only"].value("auroc") == pytest.approx(0.5)
    assert reports["lungs_only"].n == 16


def test_audit_section_roundtrip_and_old_bundles_load():
    bundle = ModelBundle.load(PNEUMONIA)
    assert bundle.audit is None or isinstance(bundle.audit, AuditSection)
    rep = bundle.evaluation.validation  # type: ignore[union-attr]
    sec = AuditSection(["x"], rep.n, "template", "grey", rep, rep, rep, source_probe=None, command="cxr audit")
    again = AuditSection.from_dict(json.loads(json.dumps(sec.to_dict())))
    assert again.to_dict() == sec.to_dict()
    with pytest.raises(ConfigKeyError, match="unknown key"):
        AuditSection.from_dict({**sec.to_dict(), "extra": 1}, "bundle.json")
    d = sec.to_dict()
    del d["lungs_only"]
    with pytest.raises(ConfigKeyError, match="lungs_only"):
        AuditSection.from_dict(d, "bundle.json")


@pytest.mark.shared_data
def test_cxr_audit_cli_two_datasets_and_write_bundle(shared_data_dir, tmp_path):
    from cxrtriage.cli.main import main

    model = tmp_path / "model"
    shutil.copytree(PNEUMONIA, model)
    out = tmp_path / "audit"
    argv = ["audit", "--model", str(model), "--out", str(out), "--max-images", "16", "--n-boot", "50"]
    argv += ["--data", str(shared_data_dir / "kermany-pneumonia"), str(shared_data_dir / "ieee8023-cxr")]
    assert main(argv + ["--write-bundle"]) == 0
    summary = json.loads((out / "audit.json").read_text())
    for key in ("original", "lungs_hidden", "lungs_only"):
        assert summary[key]["metrics"]["auroc"]["value"] is not None
    assert summary["n"] >= 20 and summary["data"] == ["kermany-pneumonia", "ieee8023-cxr"]
    probe = summary["source_probe"]
    assert probe is not None and set(probe["sources"]) == {"kermany-pneumonia", "ieee8023-cxr"}
    assert 0.0 <= probe["auroc"]["value"] <= 1.0
    assert set(summary["cam_in_lung"]) == {"NORMAL", "PNEUMONIA"}
    assert 0.1 < summary["lung_area"]["value"] < 0.5
    assert summary["lung_mask"].startswith("lung segmenter lungs-unet") and "images left out" in summary["lung_mask"]
    # the checksum names the export: a re-quantised segmenter keeps its version string
    assert f"ONNX sha256 {load_segmenter().bundle.onnx_sha256[:12]}" in summary["lung_mask"]
    assert isinstance(summary["segmentation_failed"], list)
    page = (out / "audit.html").read_text()
    assert "Hidden lungs" in page and "Source probe" in page and page.count("data:image/png;base64") >= 2
    assert all((out / e["file"]).is_file() for e in summary["examples"])
    bundle = ModelBundle.load(model)
    assert bundle.audit is not None and bundle.audit.n == summary["n"]
    assert bundle.audit.source_probe == probe
    card = (model / "README.md").read_text()
    assert "## Shortcut audit" in card and "How to read it" in card


@pytest.mark.shared_data
def test_cxr_audit_names_a_dataset_without_task_labels(kermany_dir, tmp_path, capsys):
    from cxrtriage.cli.main import main

    image = next((kermany_dir / "train" / "NORMAL").glob("*.jpg"))
    manifest = tmp_path / "other" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(f"path,label\n{image},Cardiomegaly\n")
    code = main(["audit", "--model", str(PNEUMONIA), "--data", str(manifest), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert str(manifest) in err and "no images of classes" in err
