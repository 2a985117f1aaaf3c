"""Out-of-distribution detection: colour check, Mahalanobis detector on real features, fit_ood."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cxrtriage.data.io import read_image
from cxrtriage.data.split import dataset_root
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.ood import COLOURFULNESS_LIMIT, MahalanobisDetector, colourfulness, pooled_features
from cxrtriage.serve.testing import copy_model_dir, find_model_dir


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model")
    from cxrtriage.inference.backend import OnnxBackend

    return OnnxBackend(copy_model_dir(src, tmp_path_factory.mktemp("ood") / src.name))


def test_colourfulness(example_paths):
    cxr = read_image(example_paths[0])
    gray_rgb = np.dstack([cxr] * 3)
    assert colourfulness(gray_rgb) == 0.0
    tinted = np.clip(gray_rgb.astype(float) * [1.0, 0.95, 0.85], 0, 255)  # a film photographed under warm light
    assert colourfulness(tinted) < COLOURFULNESS_LIMIT
    skd = pytest.importorskip("skimage.data")
    for photo in (skd.astronaut(), skd.coffee(), skd.chelsea()):
        assert colourfulness(photo) > COLOURFULNESS_LIMIT


def test_mahalanobis_math():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (300, 5)), rng.normal(3, 1, (300, 5))])
    y = np.repeat([0, 1], 300)
    det = MahalanobisDetector.fit(x, y)
    q = np.array([[0.5, 0, 0, 0, 0], [10, 10, 10, 10, 10]])
    manual = min(float((q[0] - m) @ det.precision @ (q[0] - m)) for m in det.means)
    np.testing.assert_allclose(det.score(q)[0], manual)
    det.calibrate(rng.normal(0, 1, (500, 5)), 99.0)
    assert det.is_outlier(q).tolist() == [False, True]


def test_detector_on_real_features(backend, tiny_folder_dataset, example_paths, tmp_path):
    """Fit on 32 real CXRs, calibrate on 8 others: natural photos score far higher than radiographs."""
    from cxrtriage.ood.fit import extract_pooled, natural_images

    paths = sorted(tiny_folder_dataset.rglob("*.png")) + sorted(tiny_folder_dataset.rglob("*.jpg"))
    imgs = [read_image(p) for p in paths]
    labels = np.array([0 if p.parent.name == "NORMAL" else 1 for p in paths])
    f = extract_pooled(backend, imgs)
    assert f.shape == (40, f.shape[1]) and f.dtype == np.float32
    det = MahalanobisDetector.fit(f[:32], labels[:32])
    det.calibrate(f[32:], 100.0)
    nat = [im for name, im, _ in natural_images() if not name.startswith("skimage:lfw")]
    assert len(nat) >= 20
    s_nat = det.score(extract_pooled(backend, nat))
    assert np.median(s_nat) > det.threshold
    assert (s_nat > det.threshold).mean() >= 0.8
    d = copy_model_dir(backend.path.parent, tmp_path / "m", export=False)
    det.save(d)
    back = MahalanobisDetector.load(d)
    np.testing.assert_allclose(back.score(f[:3]), det.score(f[:3]), rtol=1e-3)
    assert MahalanobisDetector.load(tmp_path / "nothing") is None


def test_pooled_is_classifier_input(backend, example_paths):
    x = np.stack([backend.preprocess(read_image(p)) for p in example_paths[:2]])
    logits, fmap = backend.run([x], features="map")
    w, b = backend.head
    np.testing.assert_allclose(pooled_features(fmap) @ w.T + b, logits, atol=1e-3)


def test_fit_ood_end_to_end(backend, kermany_dir, tmp_path):
    """fit_ood on a small real subset of Kermany (shared data): writes ood.npz/ood.json with the rates."""
    from cxrtriage.data.discover import discover
    from cxrtriage.ood.fit import fit_ood
    from cxrtriage.tasks import get_task

    d = copy_model_dir(backend.path.parent, tmp_path / "m")
    samples = [s for s in discover(kermany_dir, get_task("pneumonia")) if s.split == "train"]
    rng = np.random.default_rng(0)
    pick = rng.choice(len(samples), 160, replace=False)
    val = [samples[i].path for i in pick[:60]]
    bundle = ModelBundle.load(d)
    bundle.split = replace(
        bundle.split,
        data=str(kermany_dir),
        val_paths_relative=[os.path.relpath(Path(p).resolve(), dataset_root(kermany_dir)) for p in val],
    )
    bundle.save(d)
    info = fit_ood(d, max_train=100, percentile=99.5, backend=backend)
    assert (d / "ood.npz").is_file() and ModelBundle.load(d).ood.threshold == info["threshold"]
    assert info["n_train"] == 100 and info["n_val"] == 60
    assert 0 <= info["val_false_rejection_rate_cross_calibrated"] <= 0.2
    assert (
        info["natural_images"]["by_group"]["skimage_and_sklearn_photos"]["rejection_rate_colour_or_mahalanobis"] >= 0.8
    )
