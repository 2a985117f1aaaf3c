"""Explanations: Grad-CAM heatmaps and overlays."""

from .gradcam import gradcam
from .overlay import annotate_probabilities, heatmap_overlay

__all__ = ["annotate_probabilities", "gradcam", "heatmap_overlay"]
