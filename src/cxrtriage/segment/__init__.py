"""Lung-field segmentation: the segmenter's bundle, its ONNX Runtime run and the mask post-processing.

:func:`segment_lungs` is the one-call entry point; :class:`LungSegmenter` runs a segmenter folder;
:func:`assess_mask` cleans a raw mask and flags an implausible one. The PyTorch network
(:mod:`cxrtriage.segment.network`) is imported only for training and export.
"""

from cxrtriage.segment.postprocess import LungMask, assess_mask, clean_mask, lung_bbox, lung_fraction
from cxrtriage.segment.runtime import (
    LungSegmenter,
    SegmentationFailedError,
    detect_lung_only,
    load_segmenter,
    segment_lungs,
    shipped_segmenter_dir,
)

__all__ = [
    "LungMask",
    "LungSegmenter",
    "SegmentationFailedError",
    "assess_mask",
    "clean_mask",
    "detect_lung_only",
    "load_segmenter",
    "lung_bbox",
    "lung_fraction",
    "segment_lungs",
    "shipped_segmenter_dir",
]
