"""Explanations: Grad-CAM heatmaps and overlays.

:func:`gradcam` (pytorch-grad-cam, PyTorch) is loaded on first use (PEP 562 module ``__getattr__``), so CAM
from ONNX Runtime features (:mod:`cxrtriage.explain.cam`) and the overlays run without importing PyTorch.
"""

from typing import TYPE_CHECKING, Any

from cxrtriage.explain.overlay import annotate_probabilities, heatmap_overlay

if TYPE_CHECKING:
    from cxrtriage.explain.gradcam import gradcam

__all__ = ["annotate_probabilities", "gradcam", "heatmap_overlay"]


def __getattr__(name: str) -> Any:
    if name == "gradcam":
        from cxrtriage.explain.gradcam import gradcam

        return gradcam
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
