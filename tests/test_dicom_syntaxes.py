"""Every DICOM transfer syntax a modality or PACS sends, as the reference toolkits write it.

A DX (MONOCHROME2) and a CR (MONOCHROME1, windowed) 12-bit DICOM are made from a real
radiograph (a shipped example) and re-encoded by Debian's DCMTK (``dcmcjpeg``,
``dcmcjpls``, ``dcmcrle``, ``dcmconv``) and GDCM (``gdcmconv``). Each file is read by
:func:`cxrtriage.read_image`, scored by the Python API and by the real server, and must
score within 0.01 of its uncompressed original (0.05 for the lossy syntaxes).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

import cxrtriage
from cxrtriage.data.dicom import write_dicom

TOOLS = ("dcmcjpeg", "dcmcjpls", "dcmcrle", "dcmconv", "gdcmconv")

#: name -> (command before "IN OUT", transfer syntax UID the file must then have, lossy)
SYNTAXES: dict[str, tuple[list[str], str, bool]] = {
    "implicit-little": (["dcmconv", "--write-xfer-implicit"], "1.2.840.10008.1.2", False),
    "explicit-big": (["dcmconv", "--write-xfer-big"], "1.2.840.10008.1.2.2", False),
    "deflate": (["dcmconv", "--write-xfer-deflated"], "1.2.840.10008.1.2.1.99", False),
    "rle": (["dcmcrle"], "1.2.840.10008.1.2.5", False),
    "jpeg-lossless-sv1": (["dcmcjpeg", "--encode-lossless-sv1"], "1.2.840.10008.1.2.4.70", False),
    "jpeg-lossless-p14": (["dcmcjpeg", "--encode-lossless"], "1.2.840.10008.1.2.4.57", False),
    "jpeg-baseline": (["dcmcjpeg", "--encode-baseline"], "1.2.840.10008.1.2.4.50", True),
    "jpeg-extended": (["dcmcjpeg", "--encode-extended"], "1.2.840.10008.1.2.4.51", True),
    "jpeg-ls-lossless": (["dcmcjpls", "--encode-lossless"], "1.2.840.10008.1.2.4.80", False),
    "jpeg-ls-near-lossless": (["dcmcjpls", "--encode-nearlossless"], "1.2.840.10008.1.2.4.81", True),
    "jpeg-2000-gdcm": (["gdcmconv", "--j2k"], "1.2.840.10008.1.2.4.90", False),
    "jpeg-ls-gdcm": (["gdcmconv", "--jpegls"], "1.2.840.10008.1.2.4.80", False),
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, example_paths) -> dict[str, dict[str, Path]]:
    """``{"DX"|"CR": {"original" | syntax name: file}}``, or skip when the toolkits are not installed."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(
            f"DICOM toolkits not installed ({', '.join(missing)} missing): apt-get install dcmtk libgdcm-tools "
            "(scripts/test.sh does)"
        )
    root = tmp_path_factory.mktemp("syntaxes")
    img = cxrtriage.read_image(next(p for p in example_paths if p.name.startswith("PNEUMONIA")))
    stored = img.astype(np.uint16) * 16 + 7  # 12-bit detector values
    files: dict[str, dict[str, Path]] = {}
    for modality, kw, values in (
        ("DX", {}, stored),
        ("CR", {"photometric": "MONOCHROME1", "window": (2048, 4096)}, 4095 - stored),
    ):
        original = root / f"{modality}.dcm"
        write_dicom(str(original), values, modality=modality, bits=16, **kw)
        files[modality] = {"original": original}
        for name, (cmd, _, _) in SYNTAXES.items():
            out = root / f"{modality}-{name}.dcm"
            proc = subprocess.run([*cmd, str(original), str(out)], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0 and out.is_file(), f"{cmd}: {proc.stderr}"
            files[modality][name] = out
    return files


@pytest.fixture(scope="module")
def model() -> cxrtriage.Model:
    return cxrtriage.load_model("pneumonia")


def test_the_tools_wrote_the_syntax_named(encoded):
    for modality, files in encoded.items():
        for name, (_, uid, _) in SYNTAXES.items():
            ts = pydicom.dcmread(files[name], stop_before_pixels=True).file_meta.TransferSyntaxUID
            assert ts == uid, (modality, name, ts.name)


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_read_image_decodes_every_syntax(encoded, modality):
    ref = cxrtriage.read_image(encoded[modality]["original"]).astype(np.int16)
    for name, (_, _, lossy) in SYNTAXES.items():
        img = cxrtriage.read_image(encoded[modality][name])
        assert img.shape == ref.shape and img.dtype == np.uint8
        diff = np.abs(img.astype(np.int16) - ref)
        if lossy:
            assert diff.mean() < 3.0 and np.corrcoef(img.ravel(), ref.ravel())[0, 1] > 0.99, name
        else:
            assert diff.max() == 0, name


@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_every_syntax_scores_as_its_original(encoded, model, modality):
    names = list(SYNTAXES)
    probs = model.probabilities([encoded[modality]["original"]] + [encoded[modality][n] for n in names])
    pos = model.classes.index(model.config.positive_class)
    ref = probs[0, pos]
    assert ref > 0.5  # a pneumonia image, called so
    for name, row in zip(names, probs[1:]):
        tol = 0.05 if SYNTAXES[name][2] else 0.01
        assert abs(row[pos] - ref) < tol, (name, row[pos], ref)


def test_the_server_scores_every_syntax(encoded, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import copy_model_dir, find_model_dir, running_server

    src = find_model_dir()
    if src is None:
        pytest.skip("no shipped model")
    model_dir = copy_model_dir(src, tmp_path / src.name)
    from cxrtriage.store import StudyStore

    store = StudyStore(tmp_path / "data")
    store.add_user("syntax-uploader", "syntax-test-password-1", "uploader")
    store.close()
    settings = ServeSettings(model_dir=model_dir, data_dir=tmp_path / "data", host="127.0.0.1", port=0)
    auth = ("syntax-uploader", "syntax-test-password-1")
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60, auth=auth) as client:

        def score(path: Path) -> dict:
            r = client.post("/api/v1/predict", files={"file": (path.name, path.read_bytes(), "application/dicom")})
            assert r.status_code == 200, (path.name, r.text)
            return r.json()["results"][0] | r.json()

        for modality, files in encoded.items():
            ref = score(files["original"])
            pos = ref["positive_class"]
            for name, (_, _, lossy) in SYNTAXES.items():
                got = score(files[name])
                assert got["source_format"] == "dicom"
                if lossy:
                    assert got["dicom"]["TransferSyntaxUID"] == SYNTAXES[name][1]
                else:
                    # identical decoded pixels: the same study as the original (identity = hash of the pixels)
                    assert got["study_id"] == ref["study_id"], (modality, name)
                tol = 0.05 if lossy else 0.01
                assert abs(got["probabilities"][pos] - ref["probabilities"][pos]) < tol, (modality, name)
