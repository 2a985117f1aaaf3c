"""Explanations: Grad-CAM heatmaps and overlays."""

from cxrtriage.explain.gradcam import gradcam
from cxrtriage.explain.overlay import annotate_probabilities, heatmap_overlay

__all__ = ["annotate_probabilities", "gradcam", "heatmap_overlay"]
