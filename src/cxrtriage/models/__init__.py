"""Model registry, offline pretrained weights and model folders.

The registry names are loaded on first use (PEP 562 module ``__getattr__``): the registry imports timm and
PyTorch, which ONNX Runtime inference (``cxr score``, the model folders' ``config.json``) does not need.
"""

from typing import TYPE_CHECKING, Any

from cxrtriage.models.bundle import ModelBundle, ModelLoadError, default_model_dir, load_model

if TYPE_CHECKING:
    from cxrtriage.models.registry import (
        MODELS,
        UnknownModelError,
        cam_target_layer,
        create_model,
        list_models,
        model_entry,
    )

_REGISTRY_NAMES = ("MODELS", "UnknownModelError", "cam_target_layer", "create_model", "list_models", "model_entry")

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


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from cxrtriage.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
