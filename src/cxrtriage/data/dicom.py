"""Read chest radiographs from DICOM files (pydicom), keeping no patient identifiers.

Pixel pipeline (DICOM PS3.3 C.11 "Look Up Tables and Presentation States"; the
order is the grayscale standard display pipeline of PS3.4 N.2):

1. stored values -> Modality LUT or Rescale Slope/Intercept
   (``RescaleSlope``, ``RescaleIntercept``; PS3.3 C.11.1) with
   :func:`pydicom.pixels.apply_modality_lut`;
2. VOI LUT or window (``VOILUTSequence`` / ``WindowCenter``, ``WindowWidth``,
   ``VOILUTFunction``; PS3.3 C.11.2) with :func:`pydicom.pixels.apply_voi_lut`;
3. ``PhotometricInterpretation`` ``MONOCHROME1`` (minimum value = white) is
   inverted so that, as in ``MONOCHROME2``, bone and air look as on film;
4. linear scaling to 8 bits (0-255).

Only projection radiography is accepted (``Modality`` CR, DX and the
non-standard DR/RG some vendors write); CT, MR, US and others are refused.

De-identification: only the technical attributes listed in
:data:`RETAINED_KEYWORDS` are kept, none of which is listed for removal or
replacement in the Basic Application Level Confidentiality Profile (DICOM
PS3.15 Annex E, Table E.1-1). Keeping an allow-list is stricter than applying
the profile's removal list: names, IDs, dates, times, institution, device
serial numbers, UIDs and private tags are never read into the result.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrtriage.data.io import DEFAULT_MAX_PIXELS, ImageReadError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "is_dicom",
    "decode_dicom",
    "DicomRefused",
    "ACCEPTED_MODALITIES",
    "RETAINED_KEYWORDS",
]

#: ``Modality`` values accepted as chest radiographs (PS3.3 C.7.3.1.1.1):
#: CR computed radiography, DX digital radiography; DR and RG are older or
#: vendor-specific values used for the same kind of image.
ACCEPTED_MODALITIES = ("CR", "DX", "DR", "RG")

#: Attributes (DICOM keywords, PS3.6) kept in the de-identified metadata.
#: None is in the removal/replacement list of PS3.15 Annex E Table E.1-1.
RETAINED_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "BodyPartExamined",
    "ViewPosition",
    "PresentationIntentType",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "PixelSpacing",
    "ImagerPixelSpacing",
)


class DicomRefused(ImageReadError):
    """A readable DICOM file that is not a usable chest radiograph (wrong modality, no pixels...)."""


def is_dicom(data: bytes) -> bool:
    """True when ``data`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble, PS3.10 7.1)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _json_value(v: Any) -> Any:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import IS, DSfloat

    if isinstance(v, (MultiValue, list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (DSfloat, float)):
        return float(v)
    if isinstance(v, (IS, int)):
        return int(v)
    return str(v)


def deidentified_metadata(ds: Dataset) -> dict[str, Any]:
    """The allow-listed attributes of a dataset as a JSON-ready ``dict`` (keyword -> value).

    Adds ``PatientIdentityRemoved = "YES"`` and ``DeidentificationMethod``
    (PS3.15 E.1.1) to say what was done.
    """
    meta = {}
    for kw in RETAINED_KEYWORDS:
        if kw in ds:
            v = ds.get(kw)
            if v is not None and v != "":
                meta[kw] = _json_value(v)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        meta["TransferSyntaxUID"] = str(ts)
    meta["PatientIdentityRemoved"] = "YES"
    meta["DeidentificationMethod"] = (
        "cxrtriage allow-list of technical attributes (stricter than DICOM PS3.15 Annex E Basic Profile)"
    )
    return meta


def decode_dicom(
    data: bytes,
    name: str = "<upload>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    accepted_modalities: tuple[str, ...] = ACCEPTED_MODALITIES,
) -> tuple[np.ndarray, dict]:
    """Decode a DICOM chest radiograph to 8-bit grayscale plus de-identified metadata.

    Parameters
    ----------
    data : bytes
        A DICOM Part 10 file.
    name : str
        Name used in error messages.
    max_pixels : int
        Refuse images with more pixels than this (checked from ``Rows`` and
        ``Columns`` before the pixel data is decoded).
    accepted_modalities : tuple of str
        Allowed ``Modality`` values.

    Returns
    -------
    (image, metadata)
        ``image``: ``uint8 (Rows, Columns)``, 0 = black (``MONOCHROME2``
        convention after inverting ``MONOCHROME1``). ``metadata``: see
        :func:`deidentified_metadata`; never contains patient identifiers.

    Raises
    ------
    DicomRefused
        Not an accepted modality, no ``PixelData``, colour or multi-frame image.
    ImageReadError
        Not DICOM, truncated or undecodable data (e.g. a compressed transfer
        syntax without an installed decoder), too many pixels.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if not is_dicom(data):
        raise ImageReadError(name, "not a DICOM Part 10 file (no DICM marker)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
        OSError,
        AttributeError,
    ) as exc:
        raise ImageReadError(name, f"unreadable DICOM file ({exc.__class__.__name__}: {exc})") from None
    modality = str(ds.get("Modality", "") or "").upper()
    if modality not in accepted_modalities:
        shown = modality or "missing"
        raise DicomRefused(
            name, f"DICOM Modality {shown} is not a chest radiograph; accepted: {', '.join(accepted_modalities)}"
        )
    if "PixelData" not in ds:
        raise DicomRefused(name, "DICOM file has no pixel data (PixelData missing)")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomRefused(
            name,
            f"PhotometricInterpretation {photometric or 'missing'} with {spp} sample(s) per pixel; MONOCHROME1 or MONOCHROME2 expected",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomRefused(name, f"multi-frame DICOM ({frames} frames); send a single radiograph")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise ImageReadError(
            name, f"image too large: {cols}x{rows} = {rows * cols / 1e6:.1f} MP > {max_pixels / 1e6:.0f} MP"
        )
    if rows < 16 or cols < 16:
        raise ImageReadError(name, f"image too small: {cols}x{rows} pixels (at least 16x16 needed)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
            arr = apply_modality_lut(arr, ds)
            arr = apply_voi_lut(arr, ds, index=0)
    except NotImplementedError as exc:
        raise ImageReadError(name, f"cannot decode DICOM pixel data ({exc})") from None
    except (ValueError, RuntimeError, TypeError, KeyError, AttributeError, IndexError, OSError, MemoryError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        reason = (
            "truncated DICOM pixel data"
            if "length" in msg.lower() or "truncat" in msg.lower()
            else f"cannot decode DICOM pixel data ({msg})"
        )
        raise ImageReadError(name, reason) from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise DicomRefused(name, f"unexpected pixel array shape {arr.shape}; one grayscale frame expected")
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise ImageReadError(name, "DICOM image has constant or invalid pixel values")
    out = (arr - lo) * (255.0 / (hi - lo))
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return np.round(out).astype(np.uint8), deidentified_metadata(ds)


def write_dicom(
    path: str | Path,
    image: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    modality: str = "DX",
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    patient_name: str = "",
    patient_id: str = "",
    with_pixels: bool = True,
) -> None:
    """Write a single-frame grayscale image as an uncompressed DICOM file (for tests and demos).

    Parameters
    ----------
    path : path or file-like
        Destination.
    image : numpy.ndarray
        ``uint8`` or ``uint16 (H, W)`` stored values (already inverted for
        ``MONOCHROME1`` if the caller wants a faithful image).
    photometric : {"MONOCHROME1", "MONOCHROME2"}
    bits : {8, 16}
        ``BitsAllocated``; ``BitsStored`` is 8 or 12 respectively.
    modality : str
        ``Modality``.
    rescale : (slope, intercept), optional
        ``RescaleSlope`` / ``RescaleIntercept``.
    window : (center, width), optional
        ``WindowCenter`` / ``WindowWidth``.
    patient_name, patient_id : str
        Identifiers to write (tests check that they are dropped).
    with_pixels : bool
        Omit ``PixelData`` when False.

    Notes
    -----
    File meta: Explicit VR Little Endian transfer syntax (1.2.840.10008.1.2.1)
    and the Digital X-Ray Image Storage - For Presentation SOP class
    (1.2.840.10008.5.1.4.1.1.1.1), PS3.4 B.5.
    """
    import datetime

    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1" if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(path if isinstance(path, str) else "mem", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "Test Hospital"
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(image.shape[0]), int(image.shape[1])
    ds.BitsAllocated = bits
    ds.BitsStored = 8 if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if with_pixels:
        dtype = np.uint8 if bits == 8 else np.uint16
        ds.PixelData = np.ascontiguousarray(image.astype(dtype)).tobytes()
    ds.save_as(path, enforce_file_format=True)
