"""Model registry, offline pretrained weights and model folders."""

from cxrtriage.models.bundle import ModelBundle, ModelLoadError, default_model_dir, load_model
from cxrtriage.models.registry import (
    MODELS,
    UnknownModelError,
    cam_target_layer,
    create_model,
    list_models,
    model_entry,
)

__all__ = [
    "MODELS",
    "ModelLoadError",
    "UnknownModelError",
    "cam_target_layer",
    "create_model",
    "default_model_dir",
    "list_models",
    "load_model",
    "model_entry",
    "ModelBundle",
]
