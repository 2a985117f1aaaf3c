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

from cxrtriage.config import ModelConfig
from cxrtriage.models.registry import create_model

__all__ = [
    "save_model",
    "load_model",
    "ModelLoadError",
    "default_model_dir",
    "zoo_dir",
    "shipped_models",
    "resolve_model_dir",
]


class ModelLoadError(FileNotFoundError):
    """A model folder is missing or incomplete (message names the folder and the file)."""


def zoo_dir() -> Path:
    """Folder of the shipped models (``cxrtriage/zoo``), one model folder per entry."""
    return Path(__file__).resolve().parent.parent / "zoo"


def default_model_dir() -> Path:
    """The shipped default model: ``cxrtriage/zoo/pneumonia-efficientnet_lite0``."""
    return zoo_dir() / "pneumonia-efficientnet_lite0"


def shipped_models() -> list[str]:
    """Names of the shipped models (sub-folders of :func:`zoo_dir` with a ``config.json``), sorted."""
    return sorted(p.parent.name for p in zoo_dir().glob("*/config.json"))


def resolve_model_dir(value: str | Path | None = None) -> Path:
    """Model folder named by a path or by a shipped model's name.

    Parameters
    ----------
    value : path, str or None
        ``None``: the shipped default model; an existing folder; or the name of
        a shipped model (e.g. ``covid-efficientnet_lite0``, see :func:`shipped_models`).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ModelLoadError
        Neither an existing folder nor a shipped model name.
    """
    if value is None or value == "":
        return default_model_dir()
    d = Path(value)
    if d.is_dir():
        return d
    if d.name == str(value) and (zoo_dir() / d.name / "config.json").is_file():
        return zoo_dir() / d.name
    raise ModelLoadError(
        f"{value}: no such model folder and not a shipped model (shipped: {', '.join(shipped_models())})"
    )


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
        Model folder or shipped model name (:func:`resolve_model_dir`); default:
        the shipped default model (:func:`default_model_dir`).

    Returns
    -------
    (model, config)
        ``model`` in eval mode on the CPU, ``config`` its :class:`ModelConfig`.

    Raises
    ------
    ModelLoadError
        Folder, ``config.json`` or ``model.pt`` missing or unreadable.
    """
    d = resolve_model_dir(directory)
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
