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

De-identification follows the Basic Application Level Confidentiality
Profile (DICOM PS3.15 Annex E, Table E.1-1) with an allow-list instead of the
profile's removal list: only the technical attributes of
:data:`RETAINED_KEYWORDS` are kept, none of which the profile removes or
replaces; names, IDs, dates, times, institution, device serial numbers, UIDs,
private tags and every other attribute are never read into the result
(options "Retain Device Identity", "Retain Patient Characteristics", "Retain
Longitudinal Temporal Information", "Retain UIDs", "Retain Institution
Identity" and "Retain Safe Private" are therefore *not* applied; nothing is
retained that those options would keep). Coded attributes keep only values
from their defined terms (:data:`CODED_VALUES`), so free text typed into
e.g. ``BodyPartExamined`` cannot carry a name through. The profile's "Clean
Pixel Data" option is not implemented (burned-in text cannot be found
reliably), so images with ``BurnedInAnnotation = YES`` are refused
(:class:`DicomRefused`) instead of stored; "Clean Descriptors", "Clean
Structured Content" and "Clean Graphics" do not arise because no descriptor,
structured content or overlay is kept.

Resource limits: before the pixel data is decoded, ``Rows``, ``Columns``,
``BitsAllocated`` and ``NumberOfFrames`` are checked against ``max_pixels``
and the memory budget ``max_bytes``; a Deflated Explicit VR Little Endian
data set is first inflated into a counter only (``zlib.decompressobj`` with
``max_length``) and refused if it would exceed a quarter of the budget.
Scaling to 8 bits runs in float32, in place.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cxrtriage.data.io import DEFAULT_MAX_PIXELS, ImageReadError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "is_dicom",
    "decode_dicom",
    "decode_dicom_with_original",
    "OriginalPixels",
    "DicomRefused",
    "ACCEPTED_MODALITIES",
    "RETAINED_KEYWORDS",
    "CODED_VALUES",
    "DEFAULT_MAX_DECODED_BYTES",
    "check_deflated_size",
]

_STANDARD_UID = re.compile(r"1\.2\.840\.10008\.[0-9.]{1,50}")

#: Memory budget of one DICOM decode, bytes (see :func:`decode_dicom`).
DEFAULT_MAX_DECODED_BYTES = 256_000_000

#: Deflated Explicit VR Little Endian (PS3.5 A.5).
DEFLATED_TRANSFER_SYNTAX = "1.2.840.10008.1.2.1.99"

#: Coded string attributes kept only when their value is one of these defined terms
#: (PS3.3 C.8.11.1.1 ViewPosition, PS3.16 CID 4031 / PS3.3 Annex L BodyPartExamined,
#: PS3.3 C.8.11.1.1.1 PresentationIntentType, C.11.1.1.2 RescaleType, C.11.2.1.3 VOILUTFunction,
#: C.7.6.3.1.2 PhotometricInterpretation); any other value (free text) is dropped.
CODED_VALUES: dict[str, frozenset[str]] = {
    "BodyPartExamined": frozenset({"CHEST", "THORAX", "LUNG", "RIB", "STERNUM", "SPINE", "TSPINE", "ABDOMEN"}),
    "ViewPosition": frozenset(
        {"PA", "AP", "LL", "RL", "LLD", "RLD", "LAT", "LATERAL", "OBL", "LAO", "RAO", "LPO", "RPO"}
    ),
    "PresentationIntentType": frozenset({"FOR PRESENTATION", "FOR PROCESSING"}),
    "RescaleType": frozenset({"US", "OD", "HU", "MGML", "Z_EFF", "ED", "EDW", "HU_MOD", "PCT"}),
    "VOILUTFunction": frozenset({"LINEAR", "LINEAR_EXACT", "SIGMOID"}),
    "PhotometricInterpretation": frozenset({"MONOCHROME1", "MONOCHROME2"}),
    "Modality": frozenset({"CR", "DX", "DR", "RG"}),
}

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

    Coded attributes (:data:`CODED_VALUES`) are kept only with one of their
    defined terms (upper-cased); numbers only when finite; no other text
    except standard (``1.2.840.10008.``) UIDs. Adds
    ``PatientIdentityRemoved = "YES"`` and ``DeidentificationMethod``
    (PS3.15 E.1.1) to say what was done.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset

    Returns
    -------
    dict of str to object
        JSON-ready values (str, int, float or lists of numbers); never NaN or infinite.
    """
    meta = {}
    for kw in RETAINED_KEYWORDS:
        if kw in ds:
            try:
                v = ds.get(kw)
                value = _json_value(v) if v is not None and v != "" else None
            except (ValueError, TypeError, OverflowError):  # an unparsable number: dropped
                continue
            if value is None:
                continue
            if kw in CODED_VALUES:
                value = str(value).strip().upper()
                if value not in CODED_VALUES[kw]:
                    continue  # free text where a defined term belongs: may hold PHI (PS3.15 E.3.5)
            elif isinstance(value, float) and not np.isfinite(value):
                continue
            elif isinstance(value, list) and not all(isinstance(x, (int, float)) and np.isfinite(x) for x in value):
                continue
            elif isinstance(value, str) and not (kw == "SOPClassUID" and _STANDARD_UID.fullmatch(value)):
                continue  # every other retained attribute is numeric or a standard UID; text is never kept
            meta[kw] = value
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None and _STANDARD_UID.fullmatch(str(ts)):
        meta["TransferSyntaxUID"] = str(ts)
    meta["PatientIdentityRemoved"] = "YES"
    meta["DeidentificationMethod"] = (
        "cxrtriage allow-list of technical attributes, coded values restricted to defined terms "
        "(stricter than DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile)"
    )
    return meta


def _file_meta_end(data: bytes) -> int | None:
    """Offset of the data set after the file meta group (PS3.10 7.1), from ``FileMetaInformationGroupLength``."""
    if len(data) < 144 or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return None
    (group_len,) = struct.unpack_from("<I", data, 140)
    end = 144 + group_len
    return end if end <= len(data) else None


def check_deflated_size(data: bytes, name: str, max_inflated: int) -> int | None:
    """Refuse a Deflated-transfer-syntax DICOM whose data set would inflate beyond ``max_inflated`` bytes.

    The deflate stream is inflated in 1 MB steps (``zlib.decompressobj`` with
    ``max_length``) into a counter only, so at most about 1 MB is held however
    large the expansion.

    Parameters
    ----------
    data : bytes
        A DICOM Part 10 file.
    name : str
        Name used in error messages.
    max_inflated : int
        Largest accepted inflated data set, bytes.

    Returns
    -------
    int or None
        Inflated size in bytes, or None when the file is not deflated.

    Raises
    ------
    ImageReadError
        Corrupt deflate stream, or an expansion above ``max_inflated``.
    """
    end = _file_meta_end(data)
    head = data[132 : end if end is not None else 132 + 4096]
    if DEFLATED_TRANSFER_SYNTAX.encode() not in head:
        return None
    if end is None:
        raise ImageReadError(name, "deflated DICOM without a valid file meta group length")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    try:
        chunk = inflater.decompress(data[end:], 1 << 20)
        while True:  # never flush(): it would inflate the rest without a bound
            total += len(chunk)
            if total > max_inflated or inflater.eof or (not chunk and not inflater.unconsumed_tail):
                break
            chunk = inflater.decompress(inflater.unconsumed_tail, 1 << 20)
    except zlib.error as exc:
        raise ImageReadError(name, f"corrupt deflated DICOM data ({exc})") from None
    if total > max_inflated:
        raise ImageReadError(
            name,
            f"deflated DICOM data set expands beyond {max_inflated / 1e6:.0f} MB (compressed {len(data) / 1e6:.2f} MB): refused before decoding",
        )
    return total


def _int_attr(ds: Dataset, keyword: str, default: int, name: str) -> int:
    """An integer attribute, ``default`` when missing; :class:`ImageReadError` for a value that is not an integer."""
    try:
        v = ds.get(keyword, default)
        if isinstance(v, (list, tuple)) or (hasattr(v, "__len__") and not isinstance(v, (str, bytes))):
            v = v[0]
        return int(v) if v not in (None, "") else default
    except (ValueError, TypeError, OverflowError, IndexError) as exc:
        raise ImageReadError(name, f"DICOM {keyword} is not a valid integer ({exc})") from None


def _burned_in(ds: Dataset) -> bool:
    return str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"


def _display_uint8_float32(arr: np.ndarray, ds: Dataset, photometric: str, name: str) -> np.ndarray | None:
    """Rescale slope/intercept, linear window and 8-bit scaling in float32, in place (one float copy).

    Returns None when the data set needs the general pipeline (a Modality or
    VOI LUT sequence, or a sigmoid VOI function), which pydicom applies.
    """
    if "ModalityLUTSequence" in ds or "VOILUTSequence" in ds:
        return None
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if func not in ("LINEAR", "LINEAR_EXACT"):
        return None
    a = arr.astype(np.float32)
    try:
        if "RescaleSlope" in ds and "RescaleIntercept" in ds:
            slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
            if slope != 1.0:
                a *= np.float32(slope)
            if intercept != 0.0:
                a += np.float32(intercept)
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is not None and width is not None and center != "" and width != "":
            c = float(center[0] if hasattr(center, "__getitem__") and not isinstance(center, str) else center)
            w = float(width[0] if hasattr(width, "__getitem__") and not isinstance(width, str) else width)
            if func == "LINEAR":  # PS3.3 C.11.2.1.2.1
                if w < 1:
                    raise ImageReadError(name, f"DICOM WindowWidth {w:g} < 1 for a LINEAR window")
                c, w = c - 0.5, w - 1
            elif w <= 0:
                raise ImageReadError(name, f"DICOM WindowWidth {w:g} <= 0")
            # ((x - c) / w + 0.5) clipped to [0, 1]; the 8-bit stretch below maps it to 0-255
            a -= np.float32(c)
            a *= np.float32(1.0 / w) if w > 0 else np.float32(1.0)
            a += np.float32(0.5)
            np.clip(a, 0.0, 1.0, out=a)
    except (ValueError, TypeError, OverflowError, IndexError) as exc:
        raise ImageReadError(name, f"invalid DICOM rescale or window attributes ({exc})") from None
    return _stretch_uint8_inplace(a, photometric, name)


def _stretch_uint8_inplace(a: np.ndarray, photometric: str, name: str) -> np.ndarray:
    """Min-max stretch of a float array to ``uint8`` 0-255 (in place), inverting ``MONOCHROME1``."""
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        raise ImageReadError(name, "DICOM image has constant or invalid pixel values")
    a -= a.dtype.type(lo)
    a *= a.dtype.type(255.0 / (hi - lo))
    if photometric == "MONOCHROME1":
        np.subtract(a.dtype.type(255.0), a, out=a)
    np.rint(a, out=a)
    return a.astype(np.uint8)


def decode_dicom(
    data: bytes,
    name: str = "<upload>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    accepted_modalities: tuple[str, ...] = ACCEPTED_MODALITIES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
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
    max_bytes : int
        Memory budget of the decode, bytes: the estimated peak
        (``Rows * Columns * (BitsAllocated / 8 + 5)`` plus the file) must fit,
        and a deflated data set may inflate to at most a quarter of it.

    Returns
    -------
    (image, metadata)
        ``image``: ``uint8 (Rows, Columns)``, 0 = black (``MONOCHROME2``
        convention after inverting ``MONOCHROME1``). ``metadata``: see
        :func:`deidentified_metadata`; never contains patient identifiers.

    Raises
    ------
    DicomRefused
        Not an accepted modality, no ``PixelData``, colour or multi-frame image,
        ``BurnedInAnnotation = YES`` (text in the pixels may identify the patient).
    ImageReadError
        Not DICOM, truncated or undecodable data (e.g. a compressed transfer
        syntax without an installed decoder, a corrupt deflate stream, nesting
        too deep to parse, an attribute value that is not a number), too many
        pixels, over the memory budget.
    """
    img, meta, _ = _decode_bytes(data, name, max_pixels, accepted_modalities, max_bytes, keep_original=False)
    return img, meta


def decode_dicom_with_original(
    data: bytes,
    name: str = "<upload>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    accepted_modalities: tuple[str, ...] = ACCEPTED_MODALITIES,
    max_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> tuple[np.ndarray, dict, OriginalPixels]:
    """:func:`decode_dicom`, plus the original pixels for window/level in a viewer.

    Parameters
    ----------
    data, name, max_pixels, accepted_modalities, max_bytes
        As in :func:`decode_dicom`.

    Returns
    -------
    (image, metadata, original)
        ``image`` and ``metadata`` as :func:`decode_dicom`; ``original`` the modality values
        (step 1 of the pipeline, before any window; ``MONOCHROME1`` inverted) as ``uint16``
        (see :class:`OriginalPixels`).

    Raises
    ------
    DicomRefused, ImageReadError
        As :func:`decode_dicom`.
    """
    img, meta, orig = _decode_bytes(data, name, max_pixels, accepted_modalities, max_bytes, keep_original=True)
    assert orig is not None
    return img, meta, orig


def _decode_bytes(
    data: bytes,
    name: str,
    max_pixels: int,
    accepted_modalities: tuple[str, ...],
    max_bytes: int,
    keep_original: bool,
) -> tuple[np.ndarray, dict, OriginalPixels | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not is_dicom(data):
        raise ImageReadError(name, "not a DICOM Part 10 file (no DICM marker)")
    check_deflated_size(data, name, max_bytes // 4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except RecursionError:
        raise ImageReadError(name, "unreadable DICOM file (sequences nested too deeply)") from None
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        OverflowError,
        OSError,
        AttributeError,
        IndexError,
        struct.error,
        zlib.error,
        NotImplementedError,
    ) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ImageReadError(name, f"unreadable DICOM file ({exc.__class__.__name__}: {msg})") from None
    try:
        return _decode_dataset_full(ds, name, max_pixels, accepted_modalities, max_bytes, len(data), keep_original)
    except RecursionError:
        raise ImageReadError(name, "unreadable DICOM file (sequences nested too deeply)") from None
    except ImageReadError:
        raise
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        OverflowError,
        struct.error,
        zlib.error,
    ) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ImageReadError(name, f"invalid DICOM attributes ({exc.__class__.__name__}: {msg})") from None


def _decode_dataset(
    ds: Dataset, name: str, max_pixels: int, accepted_modalities: tuple[str, ...], max_bytes: int, file_bytes: int
) -> tuple[np.ndarray, dict]:
    """The checks and the pixel pipeline of :func:`decode_dicom` on a parsed data set."""
    img, meta, _ = _decode_dataset_full(ds, name, max_pixels, accepted_modalities, max_bytes, file_bytes, False)
    return img, meta


def _decode_dataset_full(
    ds: Dataset,
    name: str,
    max_pixels: int,
    accepted_modalities: tuple[str, ...],
    max_bytes: int,
    file_bytes: int,
    keep_original: bool,
) -> tuple[np.ndarray, dict, OriginalPixels | None]:
    """The checks and the pixel pipeline of :func:`decode_dicom` on a parsed data set."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

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
    frames = _int_attr(ds, "NumberOfFrames", 1, name)
    if frames > 1:
        raise DicomRefused(name, f"multi-frame DICOM ({frames} frames); send a single radiograph")
    if _burned_in(ds):
        raise DicomRefused(
            name,
            "DICOM BurnedInAnnotation is YES: the pixels contain text that may identify the patient; "
            "send an image without burned-in annotation (DICOM PS3.15 Annex E, Clean Pixel Data is not supported)",
        )
    rows, cols = _int_attr(ds, "Rows", 0, name), _int_attr(ds, "Columns", 0, name)
    if rows * cols > max_pixels:
        raise ImageReadError(
            name, f"image too large: {cols}x{rows} = {rows * cols / 1e6:.1f} MP > {max_pixels / 1e6:.0f} MP"
        )
    if rows < 16 or cols < 16:
        raise ImageReadError(name, f"image too small: {cols}x{rows} pixels (at least 16x16 needed)")
    bits = _int_attr(ds, "BitsAllocated", 16, name)
    if bits not in (1, 8, 16, 32):
        raise ImageReadError(name, f"DICOM BitsAllocated {bits} not supported (1, 8, 16 or 32)")
    need = rows * cols * (max(bits, 8) // 8 + 5) + file_bytes
    if need > max_bytes:
        raise ImageReadError(
            name,
            f"image needs about {need / 1e6:.0f} MB to decode ({cols}x{rows}, {bits} bits) > budget {max_bytes / 1e6:.0f} MB",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
            original = _original(raw, ds, photometric) if keep_original and raw.ndim == 2 else None
            if raw.ndim == 2:
                fast = _display_uint8_float32(raw, ds, photometric, name)
                if fast is not None:
                    return fast, deidentified_metadata(ds), original
            arr = apply_modality_lut(raw, ds)
            arr = apply_voi_lut(arr, ds, index=0)
    except ImageReadError:
        raise
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
    arr = np.array(arr, dtype=np.float32)  # a float32 copy: the in-place stretch must not touch pydicom's array
    if arr.ndim != 2:
        raise DicomRefused(name, f"unexpected pixel array shape {arr.shape}; one grayscale frame expected")
    return _stretch_uint8_inplace(arr, photometric, name), deidentified_metadata(ds), original


@dataclass(frozen=True)
class OriginalPixels:
    """The original pixel values of a DICOM image, for window/level in a viewer.

    Attributes
    ----------
    pixels : numpy.ndarray
        ``uint16 (Rows, Columns)``: modality values (after ``RescaleSlope``/``RescaleIntercept`` or the
        Modality LUT) minus ``offset``, ``MONOCHROME1`` inverted (higher = brighter, as displayed);
        clipped to [0, 65535] (a range wider than 16 bits is scaled down to it).
    offset : float
        ``modality value = pixels * scale + offset``.
    scale : float
        1 unless the modality range exceeded 16 bits.
    """

    pixels: np.ndarray
    offset: float
    scale: float = 1.0


def _original(raw: np.ndarray, ds: Dataset, photometric: str) -> OriginalPixels:
    """Modality values of ``raw`` as :class:`OriginalPixels` (one float64 copy)."""
    from pydicom.pixels import apply_modality_lut

    a = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if photometric == "MONOCHROME1":
        a = hi + lo - a  # keeps the range [lo, hi], inverted
    scale = max(1.0, (hi - lo) / 65535.0)
    u16 = np.clip(np.rint((a - lo) / scale), 0, 65535).astype(np.uint16)
    return OriginalPixels(u16, lo, scale)


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
