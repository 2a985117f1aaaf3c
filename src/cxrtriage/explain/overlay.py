"""Pictures for people: heatmap overlays and probability annotations.

Drawn with NumPy and PIL only: the heatmap colour map is a lookup table shipped in the package
(:data:`COLORMAP_LUT_PATH`, matplotlib's ``jet`` evaluated once by ``scripts/make_colormap_lut.py``), so the
server draws heatmaps without importing matplotlib.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["heatmap_overlay", "annotate_probabilities", "display_image", "colormap_lut", "COLORMAP_LUT_PATH"]

#: The ``jet`` colour map at the 256 levels of a ``uint8`` heatmap, ``uint8 (256, 3)`` RGB (``.npy``).
COLORMAP_LUT_PATH = Path(__file__).parent / "jet_lut.npy"


@functools.cache
def colormap_lut() -> np.ndarray:
    """The heatmap colour map: RGB of each ``uint8`` heatmap level.

    Returns
    -------
    numpy.ndarray
        ``uint8 (256, 3)``, read once from :data:`COLORMAP_LUT_PATH` (read-only).

    Raises
    ------
    ValueError
        The file does not hold a ``uint8 (256, 3)`` array.
    """
    lut = np.load(COLORMAP_LUT_PATH, allow_pickle=False)
    if lut.shape != (256, 3) or lut.dtype != np.uint8:
        raise ValueError(f"{COLORMAP_LUT_PATH}: {lut.shape} {lut.dtype}, expected (256, 3) uint8")
    lut.setflags(write=False)
    return lut


def display_image(img: np.ndarray, min_side: int = 512) -> Image.Image:
    """Grayscale ``uint8 (H, W)`` -> RGB PIL image upscaled so its shorter side is >= ``min_side``."""
    pil = Image.fromarray(img).convert("RGB")
    scale = max(1.0, min_side / min(pil.size))
    if scale > 1.0:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.Resampling.BICUBIC)
    return pil


def heatmap_overlay(img: np.ndarray, heat: np.ndarray, alpha: float = 0.4, min_side: int = 512) -> Image.Image:
    """Blend a heatmap onto the image with the ``jet`` colour map (:func:`colormap_lut`).

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)`` grayscale image.
    heat : numpy.ndarray
        ``float (h, w)`` heatmap in [0, 1] (any size; resized to the image).
    alpha : float
        Heatmap opacity, 0-1.
    min_side : int
        Output is upscaled so its shorter side is at least this.

    Returns
    -------
    PIL.Image.Image
        RGB overlay.
    """
    base = display_image(img, min_side)
    h = Image.fromarray(np.clip(heat * 255, 0, 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    colour = colormap_lut()[np.asarray(h, dtype=np.uint8)]
    out = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colour.astype(np.float32)
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def annotate_probabilities(
    img: np.ndarray, probabilities: dict[str, float], label: str, footer: str = "", min_side: int = 512
) -> Image.Image:
    """Draw the class probabilities and the predicted label on the image.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)`` grayscale image.
    probabilities : dict
        Class name -> probability (0-1).
    label : str
        Predicted class (drawn highlighted).
    footer : str
        Small text at the bottom (e.g. the research-use notice).

    Returns
    -------
    PIL.Image.Image
        RGB image, shorter side >= ``min_side``.
    """
    pil = display_image(img, min_side)
    draw = ImageDraw.Draw(pil, "RGBA")
    size = max(14, pil.width // 28)
    font, small = _font(size), _font(max(10, size * 6 // 10))
    lines = [f"{c}: {p * 100:.1f}%" for c, p in probabilities.items()]
    box_h = (len(lines) + 1) * (size + 6) + 10
    draw.rectangle([0, 0, pil.width, box_h], fill=(0, 0, 0, 170))
    draw.text((10, 6), f"AI label: {label}", fill=(255, 220, 0), font=font)
    for i, line in enumerate(lines, start=1):
        chosen = line.startswith(f"{label}:")
        draw.text((10, 6 + i * (size + 6)), line, fill=(255, 220, 0) if chosen else (255, 255, 255), font=font)
    if footer:
        fh = small.size + 10 if hasattr(small, "size") else 20
        draw.rectangle([0, pil.height - fh, pil.width, pil.height], fill=(0, 0, 0, 170))
        draw.text((8, pil.height - fh + 4), footer, fill=(255, 255, 255), font=small)
    return pil
