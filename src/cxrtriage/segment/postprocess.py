"""Lung-mask post-processing: keep the largest components, fill holes, flag implausible areas.

Pure NumPy/SciPy (no network code), so the serve process, the audit and the tests share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "LungMask",
    "clean_mask",
    "fill_holes",
    "contour_of",
    "lung_fraction",
    "assess_mask",
    "lung_bbox",
    "dice_scores",
    "LUNG_SHAPE_FEATURES",
    "lung_shape_features",
]

#: Names of :func:`lung_shape_features`, in order (fractions of the image side or area unless stated).
LUNG_SHAPE_FEATURES = (
    "lung_fraction",
    "top",
    "bottom",
    "left",
    "right",
    "height",
    "width",
    "height_to_width",
    "centroid_row",
    "centroid_col",
    "left_half_fraction",
    "right_half_fraction",
    "rows_covered",
    "widest_row",
    "bbox_fill",
)


@dataclass(frozen=True)
class LungMask:
    """A lung-field mask of one image.

    Attributes
    ----------
    mask : numpy.ndarray
        ``bool`` array ``(H, W)`` at the input image's own size; ``True`` = lung field.
    fraction : float
        Share of the image's pixels inside ``mask``, in [0, 1].
    failed : bool
        The segmentation is implausible (``fraction`` outside the segmenter's
        ``[min_fraction, max_fraction]``, default 5-50 %): callers must not use ``mask``.
    reason : str
        Why it failed (empty when it did not).
    components : int
        Connected components kept (0-2 for lungs).
    logits : numpy.ndarray or None
        The segmenter's output this mask was drawn from, ``float32 (S, S)`` at the segmenter's input size
        (:meth:`cxrtriage.segment.runtime.LungSegmenter.logits`); None when no network ran (an already
        lung-only image, a blank image, a mask built by hand). Lets a lung-input model of the same input
        size reuse the segmentation instead of running the network again (:func:`cxrtriage.inference.lung_input.apply_lung_input`).
    """

    mask: np.ndarray
    fraction: float
    failed: bool
    reason: str
    components: int
    logits: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary (no pixels): fraction rounded to 4 decimals, the flag, its reason, components."""
        return {
            "lung_fraction": round(self.fraction, 4),
            "failed": self.failed,
            "reason": self.reason,
            "components": self.components,
        }


def clean_mask(mask: np.ndarray, keep: int = 2) -> tuple[np.ndarray, int]:
    """Keep the ``keep`` largest 8-connected components of a binary mask and fill their holes.

    Parameters
    ----------
    mask : numpy.ndarray
        Array ``(H, W)``, any dtype; non-zero = foreground.
    keep : int
        Components to keep, >= 1 (2 for the two lungs).

    Returns
    -------
    (numpy.ndarray, int)
        ``bool`` mask ``(H, W)`` and the number of components kept (<= ``keep``).

    Raises
    ------
    ValueError
        ``mask`` is not 2-D or ``keep`` < 1.
    """
    m = np.asarray(mask) != 0
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {m.shape}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    from scipy import ndimage  # at the first mask, not at import

    labels, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return m, 0
    sizes = np.bincount(labels.ravel())[1:]
    kept = np.argsort(sizes)[::-1][:keep] + 1
    # holes are filled per component (the gap between the two lungs is not a hole of either), each inside its
    # own bounding box: a hole never reaches outside it, and the box is a fraction of the image
    boxes = ndimage.find_objects(labels)  # every component's box from one pass over the labels
    filled = np.zeros(m.shape, dtype=bool)
    for lab in kept:
        box = boxes[lab - 1]
        filled[box] |= fill_holes(labels[box] == lab)
    return filled, int(len(kept))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary mask: background regions that do not reach the array's border.

    The same result as ``scipy.ndimage.binary_fill_holes`` with its default 4-connected background, from one
    labelling of the background instead of scipy's iterated erosion from the border.

    Parameters
    ----------
    mask : numpy.ndarray
        ``bool (H, W)``.

    Returns
    -------
    numpy.ndarray
        ``bool (H, W)``: ``mask`` with its holes set.
    """
    from scipy import ndimage

    background, n = ndimage.label(~mask)
    is_hole = np.ones(n + 1, dtype=bool)
    is_hole[0] = False  # the mask itself
    is_hole[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    if not is_hole.any():
        return mask.copy()
    return mask | is_hole[background]


def lung_fraction(mask: np.ndarray) -> float:
    """Share of pixels of a ``(H, W)`` mask that are non-zero, in [0, 1]."""
    m = np.asarray(mask)
    return float(np.count_nonzero(m)) / float(max(1, m.size))


def assess_mask(mask: np.ndarray, min_fraction: float = 0.05, max_fraction: float = 0.50, keep: int = 2) -> LungMask:
    """Clean a raw binary lung mask (:func:`clean_mask`) and flag an implausible one.

    Parameters
    ----------
    mask : numpy.ndarray
        Raw thresholded network output ``(H, W)``; non-zero = lung.
    min_fraction, max_fraction : float
        Plausible share of the image covered by the lungs (defaults 0.05 and 0.50). The RSNA adult masks'
        1st-99th percentile is 8.8-37.5 % (``shared/data/rsna-lungs``); the pediatric pseudo-masks
        (``shared/data/lung-masks``) sit at 22-24 % median.
    keep : int
        Components kept (2 = both lungs).

    Returns
    -------
    LungMask
    """
    cleaned, n = clean_mask(mask, keep)
    frac = lung_fraction(cleaned)
    reason = ""
    if n == 0:
        reason = "no lung field found"
    elif frac < min_fraction:
        reason = f"lung fields cover {frac:.1%} of the image (< {min_fraction:.0%})"
    elif frac > max_fraction:
        reason = f"lung fields cover {frac:.1%} of the image (> {max_fraction:.0%})"
    return LungMask(mask=cleaned, fraction=frac, failed=bool(reason), reason=reason, components=n)


def lung_bbox(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """Bounding box of a lung mask, grown by a margin and clipped to the image.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)``; non-zero = lung.
    margin : float
        Added on every side as a fraction of the image's height (top/bottom) and width (left/right).

    Returns
    -------
    (top, bottom, left, right) : tuple of int
        Half-open pixel bounds: ``image[top:bottom, left:right]``. The whole image when the mask is empty.
    """
    m = np.asarray(mask) != 0
    h, w = m.shape
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if len(rows) == 0:
        return 0, h, 0, w
    dy, dx = int(round(margin * h)), int(round(margin * w))
    return (
        max(0, int(rows[0]) - dy),
        min(h, int(rows[-1]) + 1 + dy),
        max(0, int(cols[0]) - dx),
        min(w, int(cols[-1]) + 1 + dx),
    )


def lung_shape_features(mask: np.ndarray) -> np.ndarray:
    """Size, position and shape of the lung fields in the frame, independent of the image's resolution.

    Where the lungs sit in the frame and how much of it they fill tells a child's radiograph (arms, neck and
    abdomen in the field) from an adult's; gate 2 (:mod:`cxrtriage.ood.population`) uses these beside its
    image features.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` lung mask (non-zero = lung), e.g. :attr:`LungMask.mask`.

    Returns
    -------
    numpy.ndarray
        ``float64 (15,)`` in :data:`LUNG_SHAPE_FEATURES` order: covered share of the image; bounding box top,
        bottom, left, right, height and width (fractions of the image's height or width); height / width of the
        box; centroid row and column (fractions); covered share of the left and of the right image half; share
        of image rows holding lung; widest lung row (fraction of the width); covered share of the box. All zero
        for an empty mask.
    """
    m = np.asarray(mask) != 0
    h, w = m.shape
    if not m.any():
        return np.zeros(len(LUNG_SHAPE_FEATURES))
    rows, cols = np.nonzero(m)
    top, bottom = rows.min() / h, (rows.max() + 1) / h
    left, right = cols.min() / w, (cols.max() + 1) / w
    height, width = bottom - top, right - left
    frac = float(m.mean())
    return np.array(
        [
            frac,
            top,
            bottom,
            left,
            right,
            height,
            width,
            height / width,
            rows.mean() / h,
            cols.mean() / w,
            float(m[:, : w // 2].mean()),
            float(m[:, w // 2 :].mean()),
            float(m.any(axis=1).mean()),
            float(m.sum(axis=1).max()) / w,
            frac / (height * width),
        ],
        dtype=np.float64,
    )


def contour_of(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The outline of a mask, ``width`` pixels wide (inside the mask), as ``bool (H, W)``.

    Raises
    ------
    ValueError
        ``width`` < 1.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    m = np.asarray(mask, dtype=bool)
    from scipy import ndimage

    inner = ndimage.binary_erosion(m, iterations=width, border_value=0)
    return m & ~inner


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice of binary masks.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        ``(N, H, W)``; non-zero = foreground.

    Returns
    -------
    numpy.ndarray
        ``float64 (N,)`` in [0, 1]; 1.0 where both masks are empty.
    """
    p = np.asarray(pred).reshape(len(pred), -1) != 0
    t = np.asarray(truth).reshape(len(truth), -1) != 0
    inter = (p & t).sum(1)
    total = p.sum(1) + t.sum(1)
    return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
