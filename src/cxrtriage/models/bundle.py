"""A trained model on disk: weights + ``config.json`` (+ model card).

Layout of a model folder::

    DIR/config.json      ModelConfig (architecture, classes, preprocessing, threshold)
    DIR/model.pt         state_dict (float32)
    DIR/model_card.md    human-readable card      (shipped models)
    DIR/model_card.json  machine-readable card    (shipped models)
    DIR/model.onnx       optional, written by ``cxr export``
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import ModelConfig
from .registry import create_model

__all__ = ["save_model", "load_model", "ModelLoadError", "default_model_dir"]


class ModelLoadError(FileNotFoundError):
    """A model folder is missing or incomplete (message names the folder and the file)."""


def default_model_dir() -> Path:
    """The shipped default model: ``cxrtriage/zoo/pneumonia-efficientnet_lite0``."""
    return Path(__file__).resolve().parent.parent / "zoo" / "pneumonia-efficientnet_lite0"


def save_model(directory: str | Path, model: nn.Module, config: ModelConfig) -> Path:
    """Write ``model.pt`` and ``config.json`` into ``directory`` (created if needed).

    Returns
    -------
    pathlib.Path
        The model folder.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    tmp = d / "model.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(d / "model.pt")
    config.save(d / "config.json")
    return d


def load_model(directory: str | Path | None = None) -> tuple[nn.Module, ModelConfig]:
    """Load a model folder written by :func:`save_model`.

    Parameters
    ----------
    directory : path, optional
        Model folder; default: the shipped model (:func:`default_model_dir`).

    Returns
    -------
    (model, config)
        ``model`` in eval mode on the CPU, ``config`` its :class:`ModelConfig`.

    Raises
    ------
    ModelLoadError
        Folder, ``config.json`` or ``model.pt`` missing or unreadable.
    """
    d = Path(directory) if directory else default_model_dir()
    for name in ("config.json", "model.pt"):
        if not (d / name).is_file():
            raise ModelLoadError(f"{d}: not a model folder ({name} missing)")
    try:
        cfg = ModelConfig.load(d / "config.json")
        model = create_model(cfg.arch, len(cfg.classes), pretrained=False)
        model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"{d}: cannot load model ({exc})") from None
    return model.eval(), cfg
