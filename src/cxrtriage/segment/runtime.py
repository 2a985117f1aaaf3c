"""Running the lung segmenter in ONNX Runtime (no PyTorch): image in, :class:`LungMask` at the image's own size out."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxrtriage.config import SegmenterConfig
from cxrtriage.data.cache import resize_gray
from cxrtriage.data.transforms import normalize_intensity
from cxrtriage.segment.bundle import ONNX_INPUT, SegmenterBundle
from cxrtriage.segment.postprocess import LungMask, assess_mask

__all__ = [
    "LungSegmenter",
    "load_segmenter",
    "shipped_segmenter_dir",
    "segment_lungs",
    "detect_lung_only",
    "LUNG_ONLY_BLACK_SHARE",
    "SegmentationFailedError",
]

#: An image whose pixels are <= 8 (of 255) on at least this share of its area, the rest forming one or two
#: plausible lung fields, is taken as already lung-only (``shared/data/rsna-lungs``: about 70 % black, the mask
#: defined there as source pixel > 8). Its own non-black region is its lung mask; the segmenter is not run.
LUNG_ONLY_BLACK_SHARE = 0.5
_BLACK_LEVEL = 8


def shipped_segmenter_dir() -> Path:
    """The shipped lung segmenter: ``cxrtriage/segment/lung_segmenter`` (beside the code, not among the
    classifiers of ``cxrtriage/zoo``)."""
    return Path(__file__).resolve().parent / "lung_segmenter"


def detect_lung_only(img: np.ndarray, config: SegmenterConfig | None = None) -> LungMask | None:
    """The lung mask of an image that is already lung-only (outside black), or None for an ordinary image.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8 (H, W)``.
    config : SegmenterConfig, optional
        Area limits and components kept (defaults of :class:`SegmenterConfig`).

    Returns
    -------
    LungMask or None
        The non-black region (pixels > 8), cleaned like a network mask, when at least
        :data:`LUNG_ONLY_BLACK_SHARE` of the image is black and that region is a plausible lung area.
    """
    c = config or SegmenterConfig()
    black = img <= _BLACK_LEVEL
    if float(black.mean()) < LUNG_ONLY_BLACK_SHARE:
        return None
    res = assess_mask(~black, c.min_fraction, c.max_fraction, c.keep_components)
    return None if res.failed else res


#: An image whose grey levels have a standard deviation below this (of 255) has no anatomy to segment.
BLANK_STD = 2.0


def _blank(img: np.ndarray) -> LungMask | None:
    """A failed :class:`LungMask` for an image without contrast (blank, flat), else None."""
    if float(np.asarray(img, dtype=np.float32).std()) >= BLANK_STD:
        return None
    return LungMask(np.zeros(img.shape[:2], bool), 0.0, True, "blank image (no contrast to segment)", 0)


class LungSegmenter:
    """A lung segmenter folder loaded into ONNX Runtime.

    Parameters
    ----------
    folder : path
        A folder written by :meth:`cxrtriage.segment.bundle.SegmenterBundle.save`.
    threads : int
        ONNX Runtime intra-op threads.
    memory_arena : bool
        Let ONNX Runtime keep its CPU memory arena (the server turns it off: one image per call gains nothing
        from it, and the arena keeps the memory of the largest call).

    Attributes
    ----------
    onnx_sha256 : str
        SHA-256 (hex) of the ``model.onnx`` this session loaded, computed from the file (not read from
        ``bundle.json``): what a lung-input model's ``segmenter_sha256`` is compared with.

    Raises
    ------
    cxrtriage.segment.bundle.SegmenterBundleError
        Not a segmenter folder.
    ModuleNotFoundError
        ONNX Runtime is not installed (it comes with the ``serve`` extra); the message says so.
    """

    def __init__(self, folder: str | Path, threads: int = 1, memory_arena: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f'the lung segmenter runs in ONNX Runtime: {exc.name} is missing, in the serve extra: pip install "cxrtriage[serve]"',
                name=exc.name,
            ) from exc

        self.folder = Path(folder)
        self.bundle = SegmenterBundle.load(self.folder)
        self.config = self.bundle.config
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_cpu_mem_arena = memory_arena
        onnx_bytes = (self.folder / "model.onnx").read_bytes()  # one read: the checksum is of what the session loads
        self.onnx_sha256 = hashlib.sha256(onnx_bytes).hexdigest()
        self._session = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
        self._lock: contextlib.AbstractContextManager[Any] = threading.Lock()
        self._runner: Callable[[np.ndarray], np.ndarray] = self.run_inputs

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """``uint8 (H, W)`` -> network input ``float32 (1, S, S)`` (squash, normalise, standardise)."""
        c = self.config
        x = normalize_intensity(resize_gray(np.ascontiguousarray(img), c.image_size), c.intensity)
        return ((x.astype(np.float32) / 255.0 - c.mean) / c.std)[None]

    def logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Lung logits ``float32 (N, S, S)`` of ``uint8 (H, W)`` images (one ONNX Runtime call)."""
        if not len(images):
            s = self.config.image_size
            return np.zeros((0, s, s), np.float32)
        return self._runner(np.stack([self.preprocess(im) for im in images]))

    def run_inputs(self, x: np.ndarray) -> np.ndarray:
        """Lung logits ``float32 (N, S, S)`` of preprocessed inputs ``float32 (N, 1, S, S)`` (:meth:`preprocess`
        rows), one ONNX Runtime call."""
        out = self._session.run(None, {ONNX_INPUT: np.ascontiguousarray(x, np.float32)})[0]
        return np.asarray(out, dtype=np.float32)[:, 0]

    def with_runner(self, runner: Callable[[np.ndarray], np.ndarray]) -> LungSegmenter:
        """This segmenter with its network calls made by ``runner`` (e.g. a server's micro-batcher).

        Parameters
        ----------
        runner : callable
            ``float32 (N, 1, S, S)`` -> logits ``float32 (N, S, S)``, as :meth:`run_inputs` (which it
            normally calls, batched with other callers' inputs).

        Returns
        -------
        LungSegmenter
            A shallow copy sharing the session and configuration; it takes no lock of its own (the runner
            serialises the network calls), so concurrent callers can meet in one batch.
        """
        twin = copy.copy(self)
        twin._runner = runner
        twin._lock = contextlib.nullcontext()
        return twin

    def probability(self, img: np.ndarray) -> np.ndarray:
        """Lung probability ``float32 (H, W)`` in [0, 1] at the image's own size (bilinear resize of the logits)."""
        return self._to_size(self.logits([img])[0], img.shape, probability=True)

    @staticmethod
    def _to_size(logit: np.ndarray, shape: tuple[int, ...], probability: bool = False) -> np.ndarray:
        h, w = int(shape[0]), int(shape[1])
        up = logit
        if logit.shape != (h, w):
            up = np.asarray(
                Image.fromarray(logit.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR)
            )
        if probability:
            return (1.0 / (1.0 + np.exp(-up))).astype(np.float32)
        return up

    def segment_batch(self, images: Sequence[np.ndarray], detect_lung_only_input: bool = True) -> list[LungMask]:
        """Lung masks of several images (one network call for those that need it).

        Parameters
        ----------
        images : sequence of numpy.ndarray
            ``uint8 (H, W)`` each, any sizes.
        detect_lung_only_input : bool
            Take an already lung-only image's own non-black region as its mask (:func:`detect_lung_only`).

        Returns
        -------
        list of LungMask
            One per image, each at that image's size; failed segmentations are flagged (``failed``), never hidden.
            An image without contrast (grey-level standard deviation < :data:`BLANK_STD`) fails without a
            network call.
        """
        c = self.config
        out: list[LungMask | None] = [
            _blank(im) or (detect_lung_only(im, c) if detect_lung_only_input else None) for im in images
        ]
        todo = [i for i, r in enumerate(out) if r is None]
        if todo:
            with self._lock:
                logits = self.logits([images[i] for i in todo])
            for i, m in zip(todo, self.masks_from_logits(logits, [images[i].shape for i in todo])):
                out[i] = m
        return [r for r in out if r is not None]

    def masks_from_logits(self, logits: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[LungMask]:
        """Post-processed masks from :meth:`logits` output ``float32 (N, S, S)``, each resized to its ``(H, W)``
        in ``shapes``, thresholded at ``config.threshold``, cleaned and assessed (:func:`assess_mask`); each
        mask keeps its logits (``LungMask.logits``)."""
        c = self.config
        thr = float(np.log(c.threshold / (1.0 - c.threshold)))
        return [
            dataclasses.replace(
                assess_mask(self._to_size(lg, shape) >= thr, c.min_fraction, c.max_fraction, c.keep_components),
                logits=lg,
            )
            for lg, shape in zip(logits, shapes)
        ]

    def segment(self, img: np.ndarray) -> LungMask:
        """:meth:`segment_batch` of one ``uint8 (H, W)`` image."""
        return self.segment_batch([img])[0]


class SegmentationFailedError(ValueError):
    """The segmenter's mask is implausible (the message gives the covered share)."""


@lru_cache(maxsize=4)
def _cached(folder: str) -> LungSegmenter:
    return LungSegmenter(folder)


def load_segmenter(folder: str | Path | None = None) -> LungSegmenter:
    """The segmenter in ``folder`` (default the shipped one), loaded once per process and folder."""
    return _cached(str(Path(folder).resolve() if folder else shipped_segmenter_dir()))


def segment_lungs(image: Any, *, segmenter: str | Path | None = None) -> np.ndarray:
    """Lung-field mask of one chest X-ray with the shipped segmenter.

    Parameters
    ----------
    image : path, bytes-like path, PIL image or numpy array
        Anything :func:`cxrtriage.data.io.read_image` reads (PNG, JPEG, DICOM, ...) or an ``(H, W)`` array.
    segmenter : path, optional
        Another segmenter folder.

    Returns
    -------
    numpy.ndarray
        ``bool (H, W)`` at the image's own size; ``True`` = lung field.

    Raises
    ------
    cxrtriage.data.io.ImageReadError
        The file cannot be read.
    SegmentationFailedError
        The mask covers an implausible share of the image (< 5 % or > 50 %): a non-CXR, a blank or a lateral image.
    """
    from cxrtriage.data.io import as_gray_uint8, read_image

    img = read_image(image) if isinstance(image, str | Path) else as_gray_uint8(image)
    res = load_segmenter(segmenter).segment(img)
    if res.failed:
        raise SegmentationFailedError(f"lung segmentation failed: {res.reason}")
    return res.mask
