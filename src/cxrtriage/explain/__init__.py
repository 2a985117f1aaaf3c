"""Explanations: Grad-CAM heatmaps and overlays.

Importing this package does not import PyTorch: :func:`gradcam` (pytorch-grad-cam) imports it when called, so
CAM from ONNX Runtime features (:mod:`cxrtriage.explain.cam`) and the overlays run without it.
"""

from cxrtriage.explain.gradcam import gradcam
from cxrtriage.explain.overlay import annotate_probabilities, heatmap_overlay

__all__ = ["annotate_probabilities", "gradcam", "heatmap_overlay"]
