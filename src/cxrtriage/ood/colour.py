"""A cheap colour check run before the model: chest radiographs are grayscale.

Colourfulness metric of Hasler & Suesstrunk, "Measuring colourfulness in
natural images", Proc. SPIE 5007 (Human Vision and Electronic Imaging VIII),
2003: with ``rg = R - G`` and ``yb = (R + G) / 2 - B``,
``M = sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2)``.
The authors' scale puts ``M < 15`` at "not colourful" and ``M > 33`` at
"moderately colourful" or more. A grayscale radiograph saved as RGB has
``M = 0``; a tinted scan or a photo of a film on a light box stays low because
a uniform tint adds only ``0.3 * |mean|``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["colourfulness", "colourfulness_of_bytes", "COLOURFULNESS_LIMIT"]

#: Images with a colourfulness above this are refused as "not a radiograph".
COLOURFULNESS_LIMIT = 30.0

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness of an RGB image.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``uint8`` or float ``(H, W, 3)`` on the 0-255 scale.

    Returns
    -------
    float
        ``M >= 0`` (0 for gray images; about 15-110 for natural photos).
    """
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def colourfulness_of_bytes(data: bytes, max_side: int = 128) -> float:
    """Colourfulness of an encoded PNG/JPEG (0.0 for grayscale modes or undecodable data).

    The image is reduced to at most ``max_side`` pixels per side first
    (JPEG draft mode), so the check costs about a millisecond.
    """
    try:
        img = Image.open(io.BytesIO(data))
        if img.mode in _GRAY_MODES:
            return 0.0
        if img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))
        img.thumbnail((max_side, max_side))
        return colourfulness(np.asarray(img.convert("RGB")))
    except Exception:  # noqa: BLE001 - decoding errors are reported by the real decoder
        return 0.0
