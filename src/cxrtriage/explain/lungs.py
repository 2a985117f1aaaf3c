"""Images with a region hidden: the "lungs hidden" / "only lungs" views of the shortcut audit.

The lung masks themselves come from the lung segmenter (:mod:`cxrtriage.segment`), which replaced the
two-ellipse template that used to live here.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["HideFill", "hide_region"]

#: How hidden pixels are filled: the image's own mean intensity, or neutral grey (128).
HideFill = Literal["mean", "grey"]


def hide_region(img: np.ndarray, mask: np.ndarray, fill: HideFill = "mean") -> np.ndarray:
    """A copy of the image with the pixels under ``mask`` replaced by one grey level.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)``.
    mask : numpy.ndarray
        ``bool (H, W)``: pixels to hide.
    fill : {"mean", "grey"}
        ``"mean"``: the whole original image's mean intensity (rounded), so the
        image keeps its overall brightness; ``"grey"``: 128.

    Returns
    -------
    numpy.ndarray
        ``uint8 (H, W)``.

    Raises
    ------
    ValueError
        Shapes differ, or ``fill`` is unknown.
    """
    a = np.asarray(img)
    m = np.asarray(mask, dtype=bool)
    if a.shape != m.shape or a.ndim != 2:
        raise ValueError(f"image {a.shape} and mask {m.shape} must be the same (H, W)")
    if fill == "mean":
        value = int(round(float(a.mean()))) if a.size else 0
    elif fill == "grey":
        value = 128
    else:
        raise ValueError(f"fill must be 'mean' or 'grey', got {fill!r}")
    out = a.astype(np.uint8, copy=True)
    out[m] = value
    return out
