"""The ``input: full | lungs | lung-crop`` preprocessing step of a classifier (``ModelConfig.input``).

One definition for training and every inference path (CLI, API, server, batch scoring), so a lung-only model
gets the same input everywhere. The step works on the image already squashed to the model's input size
(``image_size``), before intensity normalisation:

- ``full``: unchanged;
- ``lungs``: pixels outside the lung mask set to 0 (the RSNA lung-only convention, ``shared/data/rsna-lungs``);
- ``lung-crop``: the lungs' bounding box with a 5 % margin, squashed back to ``image_size``.

The mask comes from the shipped lung segmenter (:mod:`cxrtriage.segment`). An image that is already lung-only
(at least half of it black, :func:`cxrtriage.segment.detect_lung_only`) is *detected*, not segmented: its own
non-black region is its mask, so ``lungs`` leaves it exactly as it is (idempotent on ``rsna-lungs``).
When the segmentation fails (mask < 5 % or > 50 % of the image), the model sees the full image and
:class:`LungInputResult` says so; it is never masked by an implausible mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrtriage.config import LUNG_INPUTS, ModelConfig
from cxrtriage.data.cache import resize_gray
from cxrtriage.data.transforms import preprocess
from cxrtriage.segment.postprocess import LungMask, lung_bbox
from cxrtriage.segment.runtime import LungSegmenter, detect_lung_only, load_segmenter

__all__ = [
    "LungInputResult",
    "SegmenterMismatchError",
    "apply_lung_input",
    "check_segmenter",
    "model_inputs",
    "resize_gray_to",
    "CROP_MARGIN",
]

#: Margin around the lungs' bounding box for ``lung-crop``, fraction of the image side.
CROP_MARGIN = 0.05


class SegmenterMismatchError(ValueError):
    """A lung-input model was trained and validated with another lung segmenter export (the message names both)."""


def check_segmenter(config: ModelConfig, segmenter: LungSegmenter) -> None:
    """Refuse a segmenter whose ``model.onnx`` is not the one a lung-input model was validated with.

    A model with ``input`` ``lungs`` or ``lung-crop`` learns from the masks of one segmenter export (the
    shipped finding model reads the masks' outline, ``docs/adult-models.md``); a retrained or re-quantised
    segmenter keeps its version string but draws other masks, so the model's card, threshold and
    temperature no longer describe what it does.

    Parameters
    ----------
    config : ModelConfig
        The model's ``input`` and ``segmenter_sha256``; nothing is checked for ``input: full`` or when the
        checksum is not recorded (None).
    segmenter : LungSegmenter
        The segmenter about to draw the masks; its ``onnx_sha256`` (SHA-256 of the ``model.onnx`` it loaded) is
        compared.

    Raises
    ------
    SegmenterMismatchError
        The checksums differ.
    """
    want = config.segmenter_sha256
    if config.input == "full" or want is None:
        return
    have = segmenter.onnx_sha256
    if have == want:
        return
    raise SegmenterMismatchError(
        f"model {config.version} (input {config.input}) was trained and validated with the lung segmenter whose "
        f"model.onnx has SHA-256 {want[:12]}..., but {segmenter.folder} has {have[:12]}...; its masks differ, so "
        "the model's figures and operating point do not hold. Use the segmenter it was validated with, or re-validate the model with this "
        "one (set segmenter_sha256 to null in its config.json, re-run cxr calibrate, cxr card and cxr external) "
        "and record the new checksum there"
    )


@dataclass(frozen=True)
class LungInputResult:
    """Images after the lung step, with what was done to each.

    Attributes
    ----------
    images : numpy.ndarray
        ``uint8 (N, S, S)``.
    masks : list of LungMask or None
        The mask used for each image (None for ``full``).
    fallback : list of bool
        The segmentation failed and the image was left whole.
    lung_only : list of bool
        The image was already lung-only (detected, not segmented).
    """

    images: np.ndarray
    masks: list[LungMask | None]
    fallback: list[bool]
    lung_only: list[bool]


def apply_lung_input(
    images: np.ndarray | Sequence[np.ndarray],
    mode: str,
    segmenter: LungSegmenter | None = None,
    logits: Sequence[np.ndarray | None] | None = None,
) -> LungInputResult:
    """Apply a model's lung preprocessing to square images at its input size.

    Parameters
    ----------
    images : numpy.ndarray or sequence
        ``uint8 (N, S, S)`` (or a list of ``(S, S)`` arrays): images already squashed to the model's size.
    mode : {"full", "lungs", "lung-crop"}
        :data:`cxrtriage.config.LUNG_INPUTS`.
    segmenter : LungSegmenter, optional
        Default: the shipped one (:func:`cxrtriage.segment.load_segmenter`).
    logits : sequence of (numpy.ndarray or None), optional
        One per image: the segmenter's logits ``float32 (S_seg, S_seg)`` of that image, already computed
        (``LungMask.logits``; the server segments each upload once). They must be the logits the segmenter
        gives for the squashed image, which holds when the original was segmented and the model's size
        equals the segmenter's (squashing to the segmenter's size is then the same resize). Images with
        None, or all when not given, are segmented here.

    Returns
    -------
    LungInputResult

    Raises
    ------
    ValueError
        Unknown ``mode``, or ``logits`` not one per image.
    """
    if mode not in LUNG_INPUTS:
        raise ValueError(f"unknown model input {mode!r}; choose from {', '.join(LUNG_INPUTS)}")
    arr = [np.asarray(im, dtype=np.uint8) for im in images]
    n = len(arr)
    if mode == "full" or n == 0:
        stack = np.stack(arr) if n else np.zeros((0, 0, 0), np.uint8)
        return LungInputResult(stack, [None] * n, [False] * n, [False] * n)
    seg = segmenter or load_segmenter()
    detected = [detect_lung_only(im, seg.config) for im in arr]
    lung_only = [d is not None for d in detected]
    todo = [i for i, d in enumerate(detected) if d is None]
    masks: list[LungMask | None] = list(detected)
    if logits is not None and len(logits) != n:
        raise ValueError(f"{len(logits)} logits for {n} images")
    given = {i: lg for i in todo if logits is not None and (lg := logits[i]) is not None}
    if given:
        for i, seg_mask in zip(
            given, seg.masks_from_logits(np.stack(list(given.values())), [arr[i].shape for i in given])
        ):
            masks[i] = seg_mask
        todo = [i for i in todo if i not in given]
    for i, seg_mask in zip(todo, seg.segment_batch([arr[i] for i in todo], detect_lung_only_input=False)):
        masks[i] = seg_mask
    out, fallback = [], []
    for im, m, only in zip(arr, masks, lung_only):
        if m is None or m.failed:
            out.append(im)
            fallback.append(True)
            continue
        fallback.append(False)
        if mode == "lungs":
            out.append(im if only else np.where(m.mask, im, 0).astype(np.uint8))
        else:
            top, bottom, left, right = lung_bbox(m.mask, CROP_MARGIN)
            out.append(resize_gray_to(im[top:bottom, left:right], im.shape))
    return LungInputResult(np.stack(out), masks, fallback, lung_only)


def resize_gray_to(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Squash ``uint8 (h, w)`` to ``shape[:2]`` (square shapes via :func:`cxrtriage.data.cache.resize_gray`)."""
    h, w = int(shape[0]), int(shape[1])
    if h == w:
        return resize_gray(np.ascontiguousarray(img), h)
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((w, h), Image.Resampling.BILINEAR))


def model_inputs(
    images: Sequence[np.ndarray],
    config: ModelConfig,
    segmenter: LungSegmenter | None = None,
    lungs: Sequence[LungMask | None] | None = None,
) -> np.ndarray:
    """Network input of decoded images for a model: squash, the lung step of ``config.input``, normalise.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        ``uint8 (H, W)`` each, any sizes.
    config : ModelConfig
        ``image_size``, ``input``, ``intensity``, ``mean``, ``std``.
    segmenter : LungSegmenter, optional
        Default: the shipped one (only loaded when ``config.input`` is not ``full``).
    lungs : sequence of (LungMask or None), optional
        One per image: masks ``segmenter`` already drew from these images at their own size. Their logits
        are reused, without a second network call, when the model's ``image_size`` is the segmenter's (the
        network input, hence the mask, is then the same); otherwise the squashed images are segmented.

    Returns
    -------
    numpy.ndarray
        ``float32 (N, 1, S, S)``, identical to :func:`cxrtriage.data.transforms.preprocess` for ``full``.

    Raises
    ------
    SegmenterMismatchError
        ``segmenter`` is not the export the model recorded (:func:`check_segmenter`).
    """
    s = config.image_size
    if config.input == "full":
        return np.stack([preprocess(im, s, config.intensity, config.mean, config.std) for im in images]).astype(
            np.float32, copy=False
        )
    squashed = [resize_gray(np.ascontiguousarray(im), s) for im in images]
    seg = segmenter or load_segmenter()
    check_segmenter(config, seg)
    logits = None
    if lungs is not None and seg.config.image_size == s:
        logits = [m.logits if m is not None else None for m in lungs]
    stepped = apply_lung_input(squashed, config.input, seg, logits=logits).images
    return np.stack([preprocess(im, s, config.intensity, config.mean, config.std) for im in stepped]).astype(
        np.float32, copy=False
    )
