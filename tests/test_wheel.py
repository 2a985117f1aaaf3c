"""The built wheel stands alone: installed into a fresh virtual environment it runs ``cxr demo`` and the API.

The venv sees the machine's site-packages (``--system-site-packages``) so torch is not installed
twice, but not this checkout: the commands run outside the repository without ``PYTHONPATH``, and
the test checks that ``cxrtriage`` is imported from the venv. So a file the code needs but the wheel
lacks (a model, an example, a template, the type stub) fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import cxrtriage

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

API_SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
import numpy as np
import cxrtriage
from cxrtriage.data.dicom import write_dicom

pkg = Path(cxrtriage.__file__).resolve().parent
examples = sorted((pkg / "examples").glob("*.jpg"))
model = cxrtriage.load_model("pneumonia")
preds = model.predict(examples)
tmp = Path(tempfile.mkdtemp())
bad = tmp / "text.png"
bad.write_text("not an image\n")
try:
    cxrtriage.read_image(bad)
    error = None
except cxrtriage.ImageReadError as exc:
    error = str(exc)
write_dicom(str(tmp / "x.dcm"), cxrtriage.read_image(examples[0]).astype("uint16") * 16)
print(json.dumps({
    "file": cxrtriage.__file__,
    "version": cxrtriage.__version__,
    "models": cxrtriage.list_models(),
    "names": [p.name for p in examples],
    "probs": [[p.probabilities[c] for c in model.classes] for p in preds],
    "heat": list(model.explain(examples[0]).shape),
    "dicom": list(cxrtriage.read_image(tmp / "x.dcm").shape),
    "error": error,
    "typed": (pkg / "py.typed").is_file() and (pkg / "__init__.pyi").is_file(),
}))
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # everything the wheel needs is already on the machine
    return env


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="`build` not installed (pip install build; it is in the dev extra)")
    work = tmp_path_factory.mktemp("wheel")
    tree = work / "tree"  # build from a copy, so the checkout gets no build/ or *.egg-info
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "CHANGELOG.md"):
        shutil.copy2(REPO / name, tree / name)
    shutil.copytree(REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = work / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, tree], work)
    (whl,) = dist.glob("cxrtriage-*.whl")
    return whl


def test_wheel_contents_and_metadata(wheel):
    assert wheel.name.startswith(f"cxrtriage-{cxrtriage.__version__}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "cxrtriage/py.typed",
        "cxrtriage/__init__.pyi",
        "cxrtriage/zoo/pneumonia-efficientnet_lite0/model.safetensors",
        "cxrtriage/examples/manifest.csv",
        "cxrtriage/report/templates/report.html",
        "cxrtriage/ood/cxr_gate/gate.npz",
        "cxrtriage/ood/cxr_gate/gate.json",
        "cxrtriage/ood/gate_features/model.onnx",
        "cxrtriage/ood/gate_features/export.json",
        "cxrtriage/explain/jet_lut.npy",
    ):
        assert required in names, required
    meta = zipfile.ZipFile(wheel).read(f"cxrtriage-{cxrtriage.__version__}.dist-info/METADATA").decode()
    for dep in ("pydicom", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pyjpegls"):
        assert f"Requires-Dist: {dep}" in meta, dep
    if shutil.which("twine") or _has_module("twine"):
        _run([sys.executable, "-m", "twine", "check", "--strict", wheel], wheel.parent)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_the_wheel_runs_in_a_fresh_venv(wheel, tmp_path, example_paths):
    venv = tmp_path / "venv"
    # --without-pip: the machine's pip installs into the venv; the bundled old setuptools would shadow the one torch needs
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path)
    py = venv / "bin" / "python"
    _run([py, "-m", "pip", "install", "--quiet", "--no-index", wheel], tmp_path)
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    demo = _run([venv / "bin" / "cxr", "demo", "--out", run_dir / "demo_out"], run_dir)
    assert (run_dir / "demo_out" / "index.html").is_file(), demo.stdout
    out = json.loads(_run([py, "-c", API_SCRIPT], run_dir).stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(venv.resolve()), out["file"]  # not this checkout
    assert out["version"] == cxrtriage.__version__ and out["models"] == cxrtriage.list_models()
    assert out["names"] == [p.name for p in example_paths]
    here = cxrtriage.load_model("pneumonia").probabilities(example_paths)
    assert np.abs(np.array(out["probs"]) - here).max() < 1e-6
    assert out["heat"] == [224, 224] and out["dicom"] == [224, 224] and out["typed"]
    assert out["error"] and "text.png" in out["error"]
