"""A command whose pip extra is missing prints one line naming the extra and exits 2 (no traceback);
the base install (no extra) runs the CLI, the API and DICOM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxrtriage.cli.extras import EXTRA_OF_MODULE
from cxrtriage.data.dicom import write_dicom
from cxrtriage.data.io import read_image

REPO = Path(__file__).resolve().parents[1]

# Installed as sitecustomize.py on PYTHONPATH: makes `import <module>` fail as if the extra were not installed.
# (A loader that fails, not a finder that raises: libraries probe optional modules with find_spec.)
BLOCKER = """
import importlib.machinery, sys
BLOCKED = {blocked!r}
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, _Blocker())
"""


def _run_without(blocked: set[str], args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(blocked)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "cxrtriage.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("missing", ["uvicorn", "fastapi"])
def test_serve_without_the_serve_extra_prints_one_line(missing, tmp_path):
    proc = _run_without({missing}, ["serve", "--data-dir", str(tmp_path / "d"), "--port", "0"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    out = (proc.stdout + proc.stderr).strip()
    assert out == 'cxr serve needs the serve extra: pip install "cxrtriage[serve]"'
    assert "Traceback" not in proc.stderr


def test_export_without_onnx_names_the_extra(tmp_path):
    proc = _run_without({"onnx", "onnxruntime"}, ["export", "--out", str(tmp_path / "m.onnx")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("cxr export needs the serve extra")


def test_segment_without_onnxruntime_names_the_extra(tmp_path):
    example = next((REPO / "src" / "cxrtriage" / "examples").glob("*.jpg"))
    proc = _run_without({"onnxruntime"}, ["segment", str(example), "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("cxr segment needs the serve extra"), proc.stderr


def test_other_missing_modules_still_raise(tmp_path):
    # a module that no extra provides is a bug, not a missing extra: the traceback stays
    proc = _run_without({"numpy"}, ["models"], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_every_module_in_the_table_belongs_to_that_extra():
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    extras: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if m := re.match(r"^(\w+) = \[", line):
            current = m.group(1)
        elif current and (m := re.match(r'\s+"([A-Za-z0-9_.\-]+)', line)):
            extras[m.group(1).lower()] = current
    dist_of = {
        "fpdf": "fpdf2",
        "multipart": "python-multipart",
        "python_multipart": "python-multipart",
        "fhir": "fhir.resources",
    }
    for module, extra in EXTRA_OF_MODULE.items():
        if module == "starlette":  # comes with fastapi
            continue
        assert extras.get(dist_of.get(module, module)) == extra, module


SERVE_ONLY = set(EXTRA_OF_MODULE)  # every module of the serve extra


def test_the_base_install_runs_the_cli_api_and_dicom(tmp_path, example_paths):
    dcm = tmp_path / "study.dcm"
    write_dicom(str(dcm), read_image(example_paths[-1]).astype("uint16") * 16, modality="CR")
    proc = _run_without(
        SERVE_ONLY, ["predict", "--out", str(tmp_path / "p"), str(example_paths[0]), str(dcm)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{dcm}: PNEUMONIA" in proc.stdout and f"{example_paths[0]}: NORMAL" in proc.stdout
    proc = _run_without(SERVE_ONLY, ["demo", "--out", str(tmp_path / "demo")], tmp_path)
    assert proc.returncode == 0 and (tmp_path / "demo" / "index.html").is_file(), proc.stderr


def test_the_api_names_the_extra_for_the_onnx_backend(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=sorted(SERVE_ONLY)))
    code = (
        "import cxrtriage\n"
        "try:\n"
        "    cxrtriage.load_model('pneumonia', backend='onnx')\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO / "src")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert 'needs onnx, in the serve extra: pip install "cxrtriage[serve]"' in out
