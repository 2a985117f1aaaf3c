"""Decode chest X-ray image files into one grayscale array.

Every reader in the project (training cache, evaluation, ``cxr predict``, the
web server) goes through :func:`read_image` or :func:`decode_image`, so a file
is interpreted the same way everywhere.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "IMAGE_SUFFIXES",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "read_image",
    "to_uint8_gray",
]

#: File suffixes treated as images when walking a folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

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


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a PNG or JPEG file into an 8-bit grayscale array.

    Parameters
    ----------
    path : str or pathlib.Path
        Image file.
    max_pixels : int
        Decompression-bomb guard, see :func:`decode_image`.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W)``.

    Raises
    ------
    ImageReadError
        The file is missing, unreadable, or not a usable image.
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
    return decode_image(data, str(p), max_pixels=max_pixels)
