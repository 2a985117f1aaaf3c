"""Model registry: architectures by name, one factory function.

Every entry builds a grayscale-input classifier exposing ``forward_features``
(last convolutional feature map), ``forward_head`` and ``forward`` (timm's
interface), and names the layer Grad-CAM hooks into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import timm
from torch import nn

from cxrtriage.models.cnn4 import CNN4

__all__ = [
    "ModelEntry",
    "MODELS",
    "register_model",
    "create_model",
    "list_models",
    "cam_target_layer",
    "classifier_head",
    "UnknownModelError",
    "model_entry",
    "parameter_count",
]


class UnknownModelError(KeyError):
    """Raised for an architecture name that is not registered."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    Attributes
    ----------
    name : str
        Registry name.
    build : callable
        ``build(num_classes, in_chans, drop_rate, pretrained) -> nn.Module``.
    cam_layer : callable
        ``cam_layer(model) -> nn.Module``: the last convolutional block, whose
        output Grad-CAM uses.
    has_pretrained : bool
        Whether offline ImageNet weights exist for it.
    gap_linear_head : bool
        True when the head is global average pooling + one linear layer
        (then Grad-CAM on the last feature map equals CAM).
    """

    name: str
    build: Callable[..., nn.Module]
    cam_layer: Callable[[nn.Module], nn.Module]
    has_pretrained: bool = False
    gap_linear_head: bool = True


MODELS: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add an architecture to :data:`MODELS` (returns it, for chaining)."""
    MODELS[entry.name] = entry
    return entry


def _timm_builder(timm_name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_chans: int, drop_rate: float, pretrained: bool) -> nn.Module:
        if pretrained:
            raise ValueError(f"no offline ImageNet weights for {timm_name}; use pretrained=False")
        return timm.create_model(
            timm_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
        )

    return build


def _build_lite0(num_classes: int, in_chans: int, drop_rate: float, pretrained: bool) -> nn.Module:
    model = timm.create_model(
        "efficientnet_lite0", pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
    )
    if pretrained:
        from timm.models._manipulate import adapt_input_conv

        from cxrtriage.models.pretrained import load_lite0_imagenet_state_dict

        sd = load_lite0_imagenet_state_dict()
        # Grayscale input: sum the RGB stem filters (exact when the channels are equal and share mean/std).
        sd["conv_stem.weight"] = adapt_input_conv(in_chans, sd["conv_stem.weight"])
        del sd["classifier.weight"], sd["classifier.bias"]
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
            raise RuntimeError(f"ImageNet weight mapping failed: missing={missing}, unexpected={unexpected}")
    return model


for _builtin_entry in [
    ModelEntry("efficientnet_lite0", _build_lite0, lambda m: cast(nn.Module, m.bn2), has_pretrained=True),
    ModelEntry("resnet18", _timm_builder("resnet18"), lambda m: cast(nn.Module, m.layer4)),
    ModelEntry("mobilenetv2_100", _timm_builder("mobilenetv2_100"), lambda m: cast(nn.Module, m.bn2)),
    ModelEntry("densenet121", _timm_builder("densenet121"), lambda m: cast(nn.Module, m.features)),
    ModelEntry(
        "cnn4",
        lambda num_classes, in_chans, drop_rate, pretrained: CNN4(num_classes, in_chans, drop_rate=max(drop_rate, 0.5)),
        # max-pool output of the last conv block (dropout after it is identity in eval)
        lambda m: cast(nn.Sequential, m.features)[-2],
        gap_linear_head=False,
    ),
]:
    register_model(_builtin_entry)


def list_models() -> list[str]:
    """Registered architecture names."""
    return list(MODELS)


def _entry(name: str) -> ModelEntry:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown architecture {name!r}; known: {', '.join(MODELS)}") from None


def create_model(
    name: str, num_classes: int, *, in_chans: int = 1, pretrained: bool = False, drop_rate: float = 0.2
) -> nn.Module:
    """Build a registered architecture.

    Parameters
    ----------
    name : str
        Registry name (:func:`list_models`).
    num_classes : int
        Output logits.
    in_chans : int
        Input channels (1: grayscale CXR).
    pretrained : bool
        Load offline ImageNet weights. Only architectures with
        ``has_pretrained`` have them; asking for others raises, so a run never
        claims weights it does not have.
    drop_rate : float
        Dropout before the classifier.

    Returns
    -------
    torch.nn.Module
        Input ``(N, in_chans, H, W)`` float32, output logits ``(N, num_classes)``.

    Raises
    ------
    UnknownModelError
        Unknown ``name``.
    ValueError
        ``pretrained=True`` for an architecture without offline weights.
    """
    entry = _entry(name)
    if pretrained and not entry.has_pretrained:
        raise ValueError(f"no offline ImageNet weights for {name}; train it from scratch (--no-pretrained)")
    model = entry.build(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, pretrained=pretrained)
    _init_classifier(model)
    return model


def classifier_head(model: nn.Module) -> nn.Module | None:
    """The network's final classifier: timm's ``get_classifier()``, else its ``classifier`` attribute.

    Returns
    -------
    nn.Module or None
        For the registry's GAP-head architectures an ``nn.Linear`` (``C -> K``); ``None`` when the network has
        neither. Callers that need a linear head check the type.
    """
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else getattr(model, "classifier", None)
    return head if isinstance(head, nn.Module) else None


def _init_classifier(model: nn.Module) -> None:
    """Small initial logits: N(0, 0.01) weights and zero bias in the final linear layer.

    timm's EfficientNet/MobileNet initialisation scales the classifier by
    1/sqrt(num_classes); with 2 classes and 1280 features that starts training
    with logits of +/-20 and a cross-entropy of ~6.
    """
    head = classifier_head(model)
    if isinstance(head, nn.Linear):
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)


def cam_target_layer(name: str, model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses for architecture ``name`` (of a seed ensemble: its stacked maps)."""
    from cxrtriage.models.ensemble import SeedEnsemble

    if isinstance(model, SeedEnsemble):
        return model.concat
    return _entry(name).cam_layer(model)


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name`` (raises :class:`UnknownModelError`)."""
    return _entry(name)


def parameter_count(arch: str, num_classes: int) -> int:
    """Trainable parameters of ``arch`` with a ``num_classes`` head (grayscale input)."""
    m = create_model(arch, num_classes, pretrained=False)
    return int(sum(p.numel() for p in m.parameters()))
