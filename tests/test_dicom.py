"""DICOM decoding: LUTs, MONOCHROME1/2, 8/16-bit, refusals, de-identification (real CXR pixels)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxrtriage.data.dicom import DicomRefused, decode_dicom, is_dicom, write_dicom
from cxrtriage.data.io import ImageReadError, read_image


@pytest.fixture(scope="module")
def cxr(example_paths) -> np.ndarray:
    return read_image(example_paths[0])


def _dicom_bytes(img, **kw) -> bytes:
    buf = io.BytesIO()
    write_dicom(buf, img, **kw)
    return buf.getvalue()


def _corr(a, b) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_monochrome2_8bit_roundtrip(cxr):
    data = _dicom_bytes(cxr, bits=8, patient_name="DOE^JOHN", patient_id="P123")
    assert is_dicom(data)
    img, meta = decode_dicom(data, "x.dcm")
    assert img.dtype == np.uint8 and img.shape == cxr.shape
    lo, hi = int(cxr.min()), int(cxr.max())
    expected = np.round((cxr.astype(float) - lo) * 255.0 / (hi - lo))
    assert np.abs(img.astype(float) - expected).max() <= 1
    assert meta["Modality"] == "DX" and meta["PhotometricInterpretation"] == "MONOCHROME2"
    assert meta["PatientIdentityRemoved"] == "YES"
    text = repr(meta)
    for identifier in (
        "DOE",
        "P123",
        "Test Hospital",
        "19700101",
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "SOPInstanceUID",
    ):
        assert identifier not in text


def test_monochrome1_16bit_with_rescale_is_inverted(cxr):
    stored = (4095 - cxr.astype(np.uint16) * 16).astype(np.uint16)  # MONOCHROME1: high = dark
    data = _dicom_bytes(stored, bits=16, photometric="MONOCHROME1", rescale=(2.0, -100.0))
    img, meta = decode_dicom(data)
    assert meta["BitsAllocated"] == 16 and meta["RescaleSlope"] == 2.0
    assert _corr(img, cxr) > 0.999


def test_window_is_applied(cxr):
    stored = cxr.astype(np.uint16) * 16
    full, _ = decode_dicom(_dicom_bytes(stored, bits=16))
    narrow, meta = decode_dicom(_dicom_bytes(stored, bits=16, window=(2048, 1024)))
    assert meta["WindowCenter"] == 2048.0
    # the window clips both ends: more saturated pixels than without it
    assert (narrow == 0).sum() + (narrow == 255).sum() > (full == 0).sum() + (full == 255).sum()
    assert _corr(narrow, full) > 0.8


@pytest.mark.parametrize("modality", ["CT", "MR", "US"])
def test_other_modalities_refused(cxr, modality):
    with pytest.raises(DicomRefused, match="Modality"):
        decode_dicom(_dicom_bytes(cxr, bits=8, modality=modality))


def test_no_pixel_data_refused(cxr):
    with pytest.raises(DicomRefused, match="no pixel data"):
        decode_dicom(_dicom_bytes(cxr, bits=8, with_pixels=False))


def test_truncated_dicom(cxr):
    data = _dicom_bytes(cxr.astype(np.uint16), bits=16)
    with pytest.raises(ImageReadError):
        decode_dicom(data[: len(data) - 5000])


def test_not_dicom(example_paths):
    data = example_paths[0].read_bytes()
    assert not is_dicom(data)
    with pytest.raises(ImageReadError, match="DICM"):
        decode_dicom(data)


def test_pixel_bomb_refused_from_header(cxr):
    data = _dicom_bytes(cxr, bits=8)
    with pytest.raises(ImageReadError, match="too large"):
        decode_dicom(data, max_pixels=1000)


def test_same_picture_as_png(cxr):
    """The DICOM path and the PNG path give the same pixels for the same 8-bit image."""
    buf = io.BytesIO()
    Image.fromarray(cxr).save(buf, format="PNG")
    from cxrtriage.data.io import decode_image

    png = decode_image(buf.getvalue())
    dcm, _ = decode_dicom(_dicom_bytes(cxr, bits=8))
    assert _corr(png, dcm) > 0.9999
