"""cxrtriage: chest X-ray AI for research and second opinion.

Train, evaluate, explain and serve CNN classifiers for chest radiographs.
Not a medical device and not a diagnosis: every output is a draft for a
qualified radiologist to confirm.

The Python API (:mod:`cxrtriage.api`)::

    import cxrtriage

    cxrtriage.list_models()                         # ['finding', 'pneumonia', 'pneumonia-type']
    model = cxrtriage.load_model("pneumonia")
    model.predict(["a.png", "b.dcm"])               # list[Prediction]
    model.explain("a.png")                          # float32 (H, W) heatmap in [0, 1]
    cxrtriage.read_image("b.dcm")                   # uint8 (H, W), any DICOM transfer syntax
    cxrtriage.segment_lungs("b.dcm")                # bool (H, W) lung fields (the shipped U-Net, ONNX)
    cxrtriage.evaluate(model, "data/manifest.csv")  # MetricReport with 95 % CIs

The API names are imported on first use, so ``import cxrtriage`` stays light
(no torch) for the command line; ``__init__.pyi`` beside this file gives type
checkers and IDEs their types (kept equal to ``__all__`` by tests/test_api.py).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

DISCLAIMER = (
    "Research and second-opinion use only. Not a diagnosis and not a medical device: "
    "every result must be reviewed and confirmed by a qualified radiologist."
)

#: Public name -> module that defines it (imported lazily, PEP 562).
_API = {
    "DatasetError": "cxrtriage.data.discover",
    "ImageDataset": "cxrtriage.data.dataset",
    "ImageReadError": "cxrtriage.data.io",
    "MetricReport": "cxrtriage.metrics.report",
    "Model": "cxrtriage.api",
    "ModelBundle": "cxrtriage.models.bundle",
    "ModelLoadError": "cxrtriage.models.bundle",
    "Prediction": "cxrtriage.inference.predictor",
    "evaluate": "cxrtriage.api",
    "list_models": "cxrtriage.api",
    "load_model": "cxrtriage.api",
    "read_image": "cxrtriage.data.io",
    "segment_lungs": "cxrtriage.segment.runtime",
}

__all__ = ["DISCLAIMER", "__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'cxrtriage' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
