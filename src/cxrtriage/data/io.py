"""Decode chest X-ray image files into one grayscale array.

Every reader in the project (training cache, evaluation, ``cxr predict``, the
Python API, the web server) goes through :func:`read_image`, :func:`decode_bytes`
or :func:`decode_image`, so a file is interpreted the same way everywhere. DICOM
files (recognised by their ``DICM`` marker, whatever their name) are decoded by
:func:`cxrtriage.data.dicom.decode_dicom`, which reads every transfer syntax
pydicom has a decoder for (uncompressed, deflate, RLE, JPEG baseline/extended/
lossless, JPEG-LS, JPEG 2000 through the pylibjpeg and pyjpegls plugins).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "IMAGE_SUFFIXES",
    "DEFAULT_MAX_PIXELS",
    "as_gray_uint8",
    "decode_bytes",
    "decode_image",
    "read_image",
    "to_uint8_gray",
]

#: File suffixes treated as images when walking a folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")

#: Decompression-bomb guard: images with more pixels than this are refused.
DEFAULT_MAX_PIXELS = 50_000_000


class ImageReadError(ValueError):
    """An image file cannot be used; ``str(err)`` names the file and the reason.

    Attributes
    ----------
    path : str
        The file (or upload name) that failed.
    reason : str
        A short human-readable reason, e.g. ``"truncated image"``.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _stretch_to_uint8(arr: np.ndarray, rows_per_chunk: int = 256) -> np.ndarray:
    """Min-max stretch of a numeric ``(H, W)`` array to ``uint8`` 0-255, in float32 row blocks.

    Memory: the ``uint8`` result plus one float32 block, whatever the input
    size (a 16-bit 36 MP image needs 36 MB more, not 4 float64 copies).
    """
    lo, hi = float(np.min(arr)), float(np.max(arr))
    out = np.zeros(arr.shape, dtype=np.uint8)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return out
    scale = np.float32(255.0 / (hi - lo))
    for r in range(0, arr.shape[0], rows_per_chunk):
        block = arr[r : r + rows_per_chunk].astype(np.float32)
        block -= np.float32(lo)
        block *= scale
        np.rint(block, out=block)
        np.clip(block, 0, 255, out=block)
        out[r : r + rows_per_chunk] = block
    return out


def to_uint8_gray(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to 8-bit grayscale.

    8-bit modes are converted with PIL's ITU-R 601-2 luma transform (alpha is
    dropped, palette images are expanded, CMYK goes through RGB). Modes with
    more than 8 bits (``I;16``, ``I``, ``F``: 16-bit PNG, 32-bit TIFF) are
    min-max stretched to the full 0-255 range, so a 12-bit image stored in a
    16-bit container is not left nearly black.

    Parameters
    ----------
    img : PIL.Image.Image
        A fully loaded image.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``, values 0-255.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if arr.ndim == 3:
            arr = arr.mean(axis=2, dtype=np.float32)
        return _stretch_to_uint8(arr)
    if img.mode == "L":
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("LA", "La"):
        return np.asarray(img.getchannel(0), dtype=np.uint8).copy()
    if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBa", "RGBX", "1"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def decode_image(
    data: bytes,
    name: str = "<upload>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    allow_multiframe: bool = True,
) -> np.ndarray:
    """Decode PNG or JPEG bytes into an 8-bit grayscale array.

    The format is sniffed from the content; the file name and extension are
    never trusted.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str
        Name used in error messages (a path or an upload's file name).
    max_pixels : int
        Refuse images with more pixels than this (decompression-bomb guard);
        the header is checked before the pixels are decoded.
    allow_multiframe : bool
        If False, refuse animated or multi-frame images; if True, use the
        first frame.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``.

    Raises
    ------
    ImageReadError
        Empty file, not a PNG/JPEG, truncated data, too many pixels,
        multi-frame when not allowed, or any decoder failure.
    """
    if len(data) == 0:
        raise ImageReadError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in ("PNG", "JPEG", "MPO"):
                raise ImageReadError(name, f"unsupported image format {img.format!r} (PNG or JPEG expected)")
            w, h = img.size
            if w * h > max_pixels:
                raise ImageReadError(
                    name, f"image too large: {w}x{h} = {w * h / 1e6:.1f} MP > {max_pixels / 1e6:.0f} MP"
                )
            if w < 16 or h < 16:
                raise ImageReadError(name, f"image too small: {w}x{h} pixels (at least 16x16 needed)")
            n_frames = getattr(img, "n_frames", 1)
            if n_frames > 1 and not allow_multiframe:
                raise ImageReadError(name, f"multi-frame or animated image ({n_frames} frames); send a single image")
            img.load()
            return to_uint8_gray(img)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(name, "not a readable PNG or JPEG image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(name, f"image too large ({exc})") from None
    except OSError as exc:
        msg = str(exc)
        reason = "truncated image" if "truncated" in msg.lower() else f"cannot decode image ({msg})"
        raise ImageReadError(name, reason) from None
    except (ValueError, SyntaxError, MemoryError) as exc:
        raise ImageReadError(name, f"cannot decode image ({exc})") from None


def decode_bytes(data: bytes, name: str = "<upload>", *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG, JPEG or DICOM bytes into an 8-bit grayscale array.

    DICOM (``DICM`` after the 128-byte preamble) goes through
    :func:`cxrtriage.data.dicom.decode_dicom` (Modality LUT, VOI LUT or window,
    ``MONOCHROME1`` inverted, CR/DX only); everything else through
    :func:`decode_image`.

    Parameters
    ----------
    data : bytes
        The encoded file.
    name : str
        Name used in error messages.
    max_pixels : int
        Decompression-bomb guard.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``.

    Raises
    ------
    ImageReadError
        Not a usable PNG/JPEG/DICOM radiograph (the message names ``name`` and the reason).
    """
    from cxrtriage.data.dicom import decode_dicom, is_dicom  # dicom.py imports this module

    if is_dicom(data):
        return decode_dicom(data, name, max_pixels=max_pixels)[0]
    return decode_image(data, name, max_pixels=max_pixels)


def as_gray_uint8(image: Any, name: str = "<array>") -> np.ndarray:
    """An in-memory image as the 8-bit grayscale array every model input starts from.

    Parameters
    ----------
    image : numpy.ndarray, PIL.Image.Image or torch.Tensor
        ``(H, W)`` (also ``(H, W, 1)``, ``(1, H, W)``; ``(H, W, 3|4)`` RGB(A) is
        converted with the ITU-R 601-2 luma transform). ``uint8`` is used as is;
        other integer types (``uint16``, e.g. 12-bit detector data) and floats
        outside [0, 1] are min-max stretched to 0-255 (as 16-bit PNGs are, see
        :func:`to_uint8_gray`); floats within [0, 1] (``torchvision``'s
        ``ToTensor`` convention) are multiplied by 255.
    name : str
        Used in error messages.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.

    Raises
    ------
    ImageReadError
        Not an image: wrong number of dimensions, fewer than 16x16 pixels,
        non-finite or non-numeric values.
    """
    if isinstance(image, Image.Image):
        image.load()
        return to_uint8_gray(image)
    if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor, without importing torch here
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:-1])
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8:
        return to_uint8_gray(Image.fromarray(np.ascontiguousarray(arr[..., :3])))
    if arr.ndim != 2:
        raise ImageReadError(name, f"array of shape {arr.shape}; a grayscale image (H, W) expected")
    if arr.shape[0] < 16 or arr.shape[1] < 16:
        raise ImageReadError(name, f"image too small: {arr.shape[1]}x{arr.shape[0]} pixels (at least 16x16 needed)")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageReadError(name, f"array of dtype {arr.dtype}; uint8, uint16 or float expected")
    a = arr.astype(np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageReadError(name, "array has NaN or infinite values")
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG, JPEG or DICOM file into an 8-bit grayscale array.

    The format is sniffed from the content (:func:`decode_bytes`), never from
    the file name.

    Parameters
    ----------
    path : str or pathlib.Path
        Image file.
    max_pixels : int
        Decompression-bomb guard, see :func:`decode_image`.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``. For DICOM: Modality LUT and VOI LUT
        (or window) applied, ``MONOCHROME1`` inverted, then stretched to 0-255.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, or not a usable image; ``str(err)``
        starts with the path.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(p, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(p, "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    return decode_bytes(data, str(p), max_pixels=max_pixels)
