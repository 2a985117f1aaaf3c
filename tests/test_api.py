"""The Python API (``cxrtriage.load_model(...).predict(...)``) on the shipped model and examples."""

from __future__ import annotations

import ast
import inspect
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cxrtriage
from cxrtriage.data.dicom import write_dicom

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model() -> cxrtriage.Model:
    return cxrtriage.load_model("pneumonia")


@pytest.fixture(scope="module")
def path_probs(model, example_paths) -> np.ndarray:
    return model.probabilities(example_paths)


def test_predict_equals_cxr_predict(model, example_paths, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cxrtriage.cli", "predict", "--json", "--no-gradcam", "--out", str(tmp_path)]
        + [str(p) for p in example_paths],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    cli = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    preds = model.predict(example_paths)
    assert [p.source for p in preds] == [str(p) for p in example_paths] == [r["path"] for r in cli]
    api = np.array([[p.probabilities[c] for c in model.classes] for p in preds])
    ref = np.array([[r["probabilities"][c] for c in model.classes] for r in cli])
    assert np.abs(api - ref).max() < 1e-6  # the CLI prints 6 decimals
    assert [p.label for p in preds] == [r["label"] for r in cli]
    # the shipped examples are named by their reference label; the model gets all eight right
    assert [p.label for p in preds] == [p.name.split("_")[0] for p in example_paths]
    # the shipped model has an OOD detector: its flags are filled in, and these images are in distribution
    assert all(p.ood_score is not None and p.out_of_distribution is False for p in preds)


def test_arrays_pil_and_tensors_score_as_their_paths(model, example_paths, path_probs):
    arrays = [cxrtriage.read_image(p) for p in example_paths]
    assert all(a.dtype == np.uint8 and a.ndim == 2 for a in arrays)
    for inputs in (
        arrays,
        [Image.fromarray(a) for a in arrays],
        [Image.open(p) for p in example_paths],  # RGB/L JPEGs as PIL decodes them
        [torch.from_numpy(a) for a in arrays],
        np.stack(arrays),  # (N, H, W) stack
        torch.from_numpy(np.stack(arrays)),
        (str(p) for p in example_paths),  # a generator
    ):
        got = model.probabilities(inputs)
        assert got.shape == path_probs.shape
        assert np.abs(got - path_probs).max() < 1e-6, type(inputs)
    one = model.probabilities(arrays[0])  # a single image -> (1, K)
    assert one.shape == (1, 2) and np.abs(one - path_probs[:1]).max() < 1e-6
    # 16-bit and float images (stretched / scaled) score like the 8-bit original
    u16 = [a.astype(np.uint16) * 257 + 1000 for a in arrays]
    assert np.abs(model.probabilities(u16) - path_probs).max() < 0.02
    f01 = [torch.from_numpy(a.astype(np.float32) / 255.0) for a in arrays]
    assert np.abs(model.probabilities(f01) - path_probs).max() < 1e-6


def test_dicom_photometric_and_16_bit_windowed_score_as_the_jpeg(model, example_paths, path_probs, tmp_path):
    p = example_paths[-1]
    img = cxrtriage.read_image(p)
    files = {}
    for name, kw, stored in (
        ("mono2.dcm", {"bits": 8}, img),
        ("mono1.dcm", {"bits": 8, "photometric": "MONOCHROME1"}, 255 - img),
        ("windowed16.dcm", {"bits": 16, "window": (2048, 4096), "rescale": (1.0, 0.0)}, img.astype(np.uint16) * 16),
    ):
        files[name] = tmp_path / name
        write_dicom(str(files[name]), stored, **kw)
    got = model.probabilities(list(files.values()))
    assert np.abs(got - path_probs[-1]).max() < 0.02


def test_explain_returns_the_inputs_resolution_in_0_1(model, example_paths):
    img = cxrtriage.read_image(example_paths[4])[10:210, 20:190]  # a non-square crop, 200 x 170
    for cls in (None, "NORMAL", "PNEUMONIA"):
        heat = model.explain(img, class_name=cls)
        assert heat.shape == (200, 170) and heat.dtype == np.float32
        assert 0.0 <= float(heat.min()) and float(heat.max()) <= 1.0 and float(heat.max()) > 0.5
    path_heat = model.explain(example_paths[4])
    assert path_heat.shape == cxrtriage.read_image(example_paths[4]).shape
    with pytest.raises(ValueError, match="NORMAL, PNEUMONIA"):
        model.explain(img, class_name="COVID")


def test_onnx_backend_matches_torch(model, example_paths, path_probs):
    onnx_model = cxrtriage.load_model("pneumonia", backend="onnx")
    assert onnx_model.backend.name == "onnxruntime"
    assert np.abs(onnx_model.probabilities(example_paths) - path_probs).max() < 1e-4
    heat = onnx_model.explain(example_paths[0])
    assert heat.shape == (224, 224) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_a_text_file_named_png_raises_image_read_error_naming_it(model, tmp_path, example_paths):
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello, I am text\n" * 20)
    with pytest.raises(cxrtriage.ImageReadError, match="not-an-image.png") as err:
        cxrtriage.read_image(bad)
    assert isinstance(err.value, ValueError) and err.value.path == str(bad) and "PNG or JPEG" in err.value.reason
    with pytest.raises(cxrtriage.ImageReadError, match="not-an-image.png"):
        model.predict([example_paths[0], bad])
    with pytest.raises(cxrtriage.ImageReadError, match=r"inputs\[1\]"):
        model.predict([cxrtriage.read_image(example_paths[0]), np.zeros((4, 4), np.uint8)])
    with pytest.raises(TypeError, match="iterable"):
        model.predict(42)


def test_streaming_keeps_at_most_two_batches_in_flight(model, example_paths, monkeypatch):
    consumed = 0

    def paths():
        nonlocal consumed
        for i in range(40):
            consumed += 1
            yield example_paths[i % len(example_paths)]

    seen_at_batch: list[int] = []
    run = model.backend.run

    def counting_run(batches, features="none"):
        def watch():
            for b in batches:
                seen_at_batch.append(consumed)
                yield b

        return run(watch(), features)

    monkeypatch.setattr(model.backend, "run", counting_run)
    preds = model.predict(paths(), batch_size=8)
    assert len(preds) == 40 and consumed == 40
    # when batch k (0-based) is handed to the model, at most batches k and k + 1 have been read
    assert all(n <= 8 * (k + 2) for k, n in enumerate(seen_at_batch)), seen_at_batch
    assert len(seen_at_batch) == 5


def test_unknown_model_lists_the_known_ones():
    assert cxrtriage.list_models() == ["finding", "lung-opacity", "pneumonia", "pneumonia-type"]
    with pytest.raises(
        cxrtriage.ModelLoadError, match="known models: finding, lung-opacity, pneumonia, pneumonia-type"
    ):
        cxrtriage.load_model("pneumonai")
    with pytest.raises(cxrtriage.ModelLoadError, match="withdrawn"):
        cxrtriage.load_model("covid")
    with pytest.raises(ValueError, match="backend"):
        cxrtriage.load_model("pneumonia", backend="tensorrt")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["finding", "pneumonia-type"])
def test_every_short_name_loads_its_task(name, example_paths):
    m = cxrtriage.load_model(name)
    assert m.config.task == name and m.card.config is m.config
    assert m.name.startswith(name + "-")
    probs = m.probabilities(example_paths[:2])
    assert probs.shape == (2, len(m.classes)) and np.allclose(probs.sum(axis=1), 1.0)


def test_evaluate_on_the_examples_manifest(model, examples_dir):
    report = cxrtriage.evaluate(model, examples_dir / "manifest.csv", n_boot=50)
    assert isinstance(report, cxrtriage.MetricReport)
    assert report.n == 8 and report.classes == ["NORMAL", "PNEUMONIA"]
    assert report.metrics["accuracy"].value == 1.0
    ds = cxrtriage.ImageDataset(examples_dir / "manifest.csv", "pneumonia")
    assert len(ds) == 8 and ds.classes == ("NORMAL", "PNEUMONIA") and ds.labels.tolist().count(1) == 4
    assert len(set(ds.patient_ids)) == 8
    img, label = ds[0]
    assert img.dtype == np.uint8 and label in (0, 1)
    again = cxrtriage.evaluate(model, ds, n_boot=50)
    assert again.to_dict() == report.to_dict()
    loader = torch.utils.data.DataLoader(
        cxrtriage.ImageDataset(examples_dir, "pneumonia", transform=lambda a: torch.from_numpy(a[:200, :200])),
        batch_size=4,
    )
    x, y = next(iter(loader))
    assert tuple(x.shape) == (4, 200, 200) and tuple(y.shape) == (4,)


# --- public API snapshot: a change here must be deliberate (update the snapshot and CHANGELOG.md) -----

API_SNAPSHOT = {
    "__all__": [
        "DISCLAIMER",
        "__version__",
        "DatasetError",
        "ImageDataset",
        "ImageReadError",
        "MetricReport",
        "Model",
        "ModelBundle",
        "ModelLoadError",
        "Prediction",
        "evaluate",
        "list_models",
        "load_model",
        "read_image",
        "segment_lungs",
    ],
    "list_models": "() -> 'list[str]'",
    "load_model": "(name_or_path: 'str | os.PathLike', *, device: 'str' = 'cpu', "
    "backend: \"Literal['torch', 'onnx']\" = 'torch', threads: 'int | None' = None) -> 'Model'",
    "evaluate": "(model: 'Model', dataset: 'str | os.PathLike | ImageDataset', *, split: 'str | None' = None, "
    "n_boot: 'int' = 1000, seed: 'int' = 0, batch_size: 'int' = 32) -> 'MetricReport'",
    "read_image": "(path: 'str | Path', *, max_pixels: 'int' = 50000000) -> 'np.ndarray'",
    "segment_lungs": "(image: 'Any', *, segmenter: 'str | Path | None' = None) -> 'np.ndarray'",
    "Model.probabilities": "(self, inputs: 'Any', *, batch_size: 'int' = 32, workers: 'int' = 2) -> 'np.ndarray'",
    "Model.predict": "(self, inputs: 'Any', *, batch_size: 'int' = 32, workers: 'int' = 2, cxr_gate: 'bool' = True) "
    "-> 'list[Prediction]'",
    "Model.explain": "(self, image: 'Any', class_name: 'str | None' = None) -> 'np.ndarray'",
    "ImageDataset": "(data: 'str | Path', task: 'str', split: 'str | None' = None, "
    "transform: 'Callable[[np.ndarray], Any] | None' = None) -> 'None'",
    "Prediction": "(probabilities: 'dict[str, float]', label: 'str', label_index: 'int', threshold: 'float | None', "
    "positive_class: 'str', triage: 'str', extra: 'dict' = <factory>, source: 'str | None' = None, "
    "ood_score: 'float | None' = None, out_of_distribution: 'bool | None' = None, refused: 'str | None' = None) -> None",
}


def test_public_api_snapshot(model):
    got = {"__all__": list(cxrtriage.__all__)}
    for name in ("list_models", "load_model", "evaluate", "read_image", "segment_lungs", "ImageDataset", "Prediction"):
        got[name] = str(inspect.signature(getattr(cxrtriage, name)))
    for meth in ("probabilities", "predict", "explain"):
        got[f"Model.{meth}"] = str(inspect.signature(getattr(cxrtriage.Model, meth)))
    assert got == API_SNAPSHOT
    assert model.classes == ["NORMAL", "PNEUMONIA"] and isinstance(model.card, cxrtriage.ModelBundle)
    assert model.config is model.card.config and model.name == "pneumonia-efficientnet_lite0"
    for name in cxrtriage.__all__:
        assert getattr(cxrtriage, name) is not None and name in dir(cxrtriage)
    with pytest.raises(AttributeError):
        cxrtriage.no_such_name  # noqa: B018


def test_type_stub_names_exactly_all():
    stub = ast.parse((REPO / "src" / "cxrtriage" / "__init__.pyi").read_text())
    names = {a.asname or a.name for node in stub.body if isinstance(node, ast.ImportFrom) for a in node.names}
    names |= {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    assert names - {"__all__"} == set(cxrtriage.__all__)


def test_import_cxrtriage_does_not_load_torch():
    code = "import sys, cxrtriage; print(cxrtriage.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == [cxrtriage.__version__, "False"]


def test_version_is_defined_once():
    text = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = {attr = "cxrtriage.__version__"}' in text
    assert "\nversion = " not in text.split("[tool.setuptools.dynamic]")[0]
    assert f"## [{cxrtriage.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_read_image_reads_dicom_from_bytes_on_disk(tmp_path, example_paths):
    img = cxrtriage.read_image(example_paths[0])
    buf = io.BytesIO()
    write_dicom(buf, img, bits=8)
    f = tmp_path / "no-extension"
    f.write_bytes(buf.getvalue())
    lo, hi = float(img.min()), float(img.max())
    expected = np.round((img - lo) * 255.0 / (hi - lo))  # DICOM pixels are stretched to 0-255
    assert np.abs(cxrtriage.read_image(f) - expected).max() <= 1
