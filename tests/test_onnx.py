"""ONNX export and the ONNX Runtime fast path: same outputs as PyTorch, CAM equals Grad-CAM."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxrtriage.data.io import read_image
from cxrtriage.explain.cam import cam_from_features, classifier_weights, normalize_cam, upsample_cam
from cxrtriage.serve.testing import copy_model_dir, find_model_dir

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    d = copy_model_dir(src, tmp_path_factory.mktemp("onnx") / "model", export=False)
    (d / "model.onnx").unlink(missing_ok=True)
    (d / "README.md").write_text("# stale card\n")
    from cxrtriage.inference.export import export_onnx

    export_onnx(d)
    return d


@pytest.fixture(scope="module")
def images(example_paths):
    return [read_image(p) for p in example_paths]


def test_export_records_checksum(exported):
    from cxrtriage.inference.backend import file_sha256

    sha = file_sha256(exported / "model.onnx")
    assert json.loads((exported / "bundle.json").read_text())["onnx"]["sha256"] == sha
    card = (exported / "README.md").read_text()
    assert sha in card and card.startswith("---\n"), "the card is re-rendered from the bundle"


def test_onnx_matches_torch(exported, images):
    from cxrtriage.inference import Predictor
    from cxrtriage.inference.backend import OnnxBackend

    onnx_p = OnnxBackend(exported).probabilities(images)
    torch_p = Predictor(exported).probabilities(images)
    assert onnx_p.shape == (8, 2)
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)


def test_torch_and_onnx_backends_give_the_same_logits(exported, example_paths):
    """The one forward pass, two engines: equal logits and features on the shipped examples."""
    from cxrtriage.inference.backend import OnnxBackend, TorchBackend, config_batches

    onnx_b = OnnxBackend(exported, threads=1)
    torch_b = TorchBackend.from_dir(exported, threads=1)
    assert onnx_b.config is not None
    batches = list(config_batches(example_paths, onnx_b.config, batch_size=3))  # paths read once, 3 + 3 + 2
    lo, fo = onnx_b.run(batches, features="pooled")
    lt, ft = torch_b.run(batches, features="pooled")
    assert lo.shape == lt.shape == (len(example_paths), len(onnx_b.config.classes))
    assert lo.dtype == lt.dtype == np.float32
    np.testing.assert_allclose(lo, lt, atol=1e-4)
    np.testing.assert_allclose(fo, ft, atol=1e-4)
    # the map's global average is the pooled feature; no features asked, none computed
    lm, fm = onnx_b.run(batches[:1], features="map")
    np.testing.assert_allclose(fm.mean(axis=(2, 3)), fo[:3], atol=1e-5)
    assert onnx_b.run(batches[:1])[1].shape == (3, 0)


def test_stale_onnx_is_refused(exported, tmp_path):
    from cxrtriage.inference.backend import OnnxBackend
    from cxrtriage.inference.loading import load_backend

    d = copy_model_dir(exported, tmp_path / "m", export=False)
    sections = json.loads((d / "bundle.json").read_text())
    sections["onnx"]["sha256"] = "0" * 64
    (d / "bundle.json").write_text(json.dumps(sections))
    with pytest.raises(ValueError, match="SHA-256"):
        OnnxBackend(d)
    assert load_backend(d, export_if_missing=False).name == "torch"  # stale and no re-export: PyTorch
    b = load_backend(d)  # writable folder: re-exported on load
    assert b.name == "onnxruntime"
    assert json.loads((d / "bundle.json").read_text())["onnx"]["sha256"] == b.sha256


def test_cam_equals_gradcam(exported, images):
    """CAM from the exported feature map vs pytorch-grad-cam's Grad-CAM on the same layer (Pearson r >= 0.99)."""
    from cxrtriage.explain import gradcam
    from cxrtriage.inference.backend import OnnxBackend
    from cxrtriage.models import load_model

    backend = OnnxBackend(exported)
    model, cfg = load_model(exported)
    w_torch, _ = classifier_weights(model)
    np.testing.assert_allclose(backend.head[0], w_torch, atol=1e-6)
    corrs = []
    for img in images[::2]:  # 2 NORMAL + 2 PNEUMONIA examples, both classes each
        x = backend.preprocess(img)
        logits, fmap = backend.run([x[None]], features="map")
        for cls in range(len(cfg.classes)):
            cam = upsample_cam(normalize_cam(cam_from_features(fmap[0], backend.head[0], cls)), cfg.image_size)
            ref = gradcam(model, cfg.arch, x, cls)
            if ref.max() == 0 and cam.max() == 0:
                corrs.append(1.0)
                continue
            corrs.append(float(np.corrcoef(cam.ravel(), ref.ravel())[0, 1]))
    assert min(corrs) >= 0.99, corrs


def _overlay_with_matplotlib(img: np.ndarray, heat: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap overlay as it was drawn before the shipped colour table: matplotlib's ``jet`` per pixel."""
    from matplotlib import colormaps
    from PIL import Image

    from cxrtriage.explain.overlay import display_image

    base = display_image(img)
    h = Image.fromarray(np.clip(heat * 255, 0, 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    colour = (colormaps["jet"](np.asarray(h, dtype=np.float32) / 255.0)[..., :3] * 255).astype(np.uint8)
    out = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colour.astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def test_heatmap_overlay_is_the_matplotlib_one_without_matplotlib(example_paths):
    """The shipped colour table is matplotlib's ``jet`` at every level, and the server's overlays of real CAMs of the
    shipped model are pixel-identical to the ones drawn with matplotlib."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("onnxruntime")
    from matplotlib import colormaps

    from cxrtriage.explain.overlay import colormap_lut, display_image, heatmap_overlay
    from cxrtriage.inference.backend import OnnxBackend

    levels = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    assert np.array_equal(colormap_lut(), (colormaps["jet"](levels)[:, :3] * 255).astype(np.uint8))
    src = find_model_dir()
    if src is None:
        pytest.skip("no shipped model")
    backend = OnnxBackend(src, threads=1)
    ramp = np.tile(np.linspace(0, 1, 300, dtype=np.float32), (40, 1))  # every level, and both ends
    pairs = [(read_image(example_paths[0]), ramp)]
    for p in example_paths:
        img = read_image(p)
        _, fmap = backend.run([backend.preprocess(img)[None]], features="map")
        assert backend.head is not None
        for k in range(backend.head[0].shape[0]):
            cam = normalize_cam(cam_from_features(fmap[0], backend.head[0], k))
            pairs.append((img, upsample_cam(cam, display_image(img).size)))  # as the server draws it
    for img, heat in pairs:
        got = np.asarray(heatmap_overlay(img, heat))
        assert got.dtype == np.uint8 and np.array_equal(got, _overlay_with_matplotlib(img, heat))
