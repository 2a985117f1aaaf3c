"""Typed configuration: the one place where run and model settings live.

``TrainConfig`` holds everything ``cxr train`` needs; ``ModelConfig`` is what a
trained model carries with it (``config.json`` in the model folder) so that
evaluation, prediction and serving prepare inputs and take decisions exactly as
training did.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["TrainConfig", "ModelConfig", "ConfigKeyError", "SELECT_METRICS", "strict_from_dict"]

#: Validation metrics that may choose the best epoch (``TrainConfig.select_metric``);
#: ``macro_sensitivity`` is scikit-learn's balanced accuracy of the arg-max call.
SELECT_METRICS = ("auroc", "macro_sensitivity")


_T = TypeVar("_T")


class ConfigKeyError(ValueError):
    """A configuration mapping has an unknown key or lacks a required one (the message names the key and source)."""


def strict_from_dict(cls: type[_T], data: dict[str, Any], source: str = "") -> _T:
    """Strictly build dataclass ``cls`` from ``data``.

    Raises
    ------
    ConfigKeyError
        ``data`` has a key that is not a field of ``cls``, or lacks a field without default;
        the message names the key(s) and ``source`` (e.g. the file read).
    """
    where = f"{source}: " if source else ""
    flds = fields(cls)  # type: ignore[arg-type]
    names = {f.name for f in flds}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigKeyError(f"{where}unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}")
    required = [f.name for f in flds if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigKeyError(f"{where}missing required key(s) {', '.join(map(repr, missing))} for {cls.__name__}")
    return cls(**data)


@dataclass
class TrainConfig:
    """Settings of one training run (``cxr train``).

    Attributes
    ----------
    task : str
        Task name from :data:`cxrtriage.tasks.TASKS`.
    data : str
        Dataset folder or manifest.
    out : str
        Output folder (checkpoints, history, curves, the trained model).
    arch : str
        Model name from the registry (:func:`cxrtriage.models.list_models`).
    image_size : int
        Square input side in pixels (64-512).
    epochs : int
        Maximum number of epochs.
    batch_size : int
        Images per optimisation step.
    lr : float
        Peak learning rate (cosine decay after a one-epoch-fraction warm-up).
    optimizer : str
        ``adamw``, ``adam``, ``sgd`` (Nesterov momentum 0.9) or ``adagrad``.
    weight_decay : float
        Decoupled (AdamW) or L2 weight decay.
    balance : str
        Class-imbalance handling: ``sampler`` (weighted random sampler),
        ``loss`` (inverse-frequency class weights) or ``none``.
    patience : int
        Early stopping: epochs without improvement of ``select_metric``.
    val_fraction : float
        Validation share for the patient-level split when the data has no ``val`` split.
    seed : int
        Seed for the split, initialisation and augmentation.
    intensity : str
        Intensity normalisation (:data:`cxrtriage.data.transforms.INTENSITY_METHODS`).
    hflip : bool
        Random horizontal flips (off by default: flips put the heart on the right).
    label_smoothing : float
        Cross-entropy label smoothing (0 = none).
    pretrained : bool
        Start from ImageNet weights where a packaged source exists.
    threads : int
        ``torch.set_num_threads``.
    channels_last : bool
        Use the channels-last memory format (faster convolutions on CPU).
    max_train_images : int or None
        Cap on training images (stratified random subset) for quick runs.
    cache_dir : str or None
        Decoded-image cache folder (default ``~/.cache/cxrtriage``).
    threshold_rule : str
        How the decision threshold is chosen on validation: ``youden`` or
        ``sensitivity:<target>`` (e.g. ``sensitivity:0.95``).
    select_metric : str
        Validation metric that picks the best epoch (and drives early stopping):
        ``auroc`` (macro one-vs-rest AUROC for multi-class tasks) or
        ``macro_sensitivity`` (mean per-class sensitivity of the arg-max call,
        i.e. balanced accuracy), for tasks whose target is stated as a sensitivity.
    """

    task: str = "pneumonia"
    data: str = ""
    out: str = "runs/model"
    arch: str = "efficientnet_lite0"
    image_size: int = 224
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    balance: str = "sampler"
    patience: int = 3
    val_fraction: float = 0.15
    seed: int = 0
    intensity: str = "equalize"
    hflip: bool = False
    label_smoothing: float = 0.1
    pretrained: bool = True
    threads: int = 2
    channels_last: bool = True
    max_train_images: int | None = None
    cache_dir: str | None = None
    threshold_rule: str = "youden"
    select_metric: str = "auroc"

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> TrainConfig:
        """Build from a ``dict`` (strict).

        Parameters
        ----------
        data : dict
            Field name -> value; every key must be a field.
        source : str
            Where ``data`` came from (named in errors), e.g. a file path.

        Raises
        ------
        ConfigKeyError
            Unknown key (message names it and ``source``).
        """
        return strict_from_dict(cls, data, source)


@dataclass
class ModelConfig:
    """What a trained model needs at inference time (``config.json``).

    Attributes
    ----------
    arch : str
        Registry name of the architecture.
    task : str
        Task name.
    classes : list of str
        Output classes, logit order.
    image_size : int
        Input side in pixels.
    intensity : str
        Intensity normalisation applied before standardisation.
    mean, std : float
        Standardisation on the [0, 1] scale.
    threshold : float or None
        Binary tasks: probability of ``positive_class`` at or above which the
        image is called positive; chosen on validation by ``threshold_rule``.
    threshold_rule : str
        How ``threshold`` was chosen.
    positive_class : str
        The thresholded class.
    temperature : float
        Softmax temperature (1.0 = uncalibrated; set by temperature scaling).
    version : str
        Model version string shown in reports and the API.

    Training summary, calibration details and the ONNX checksum live in the
    model bundle's sections (:class:`cxrtriage.models.bundle.ModelBundle`), not here.
    """

    arch: str
    task: str
    classes: list[str]
    image_size: int
    intensity: str = "equalize"
    mean: float = 0.5
    std: float = 0.5
    threshold: float | None = None
    threshold_rule: str = "argmax"
    positive_class: str = ""
    temperature: float = 1.0
    version: str = "0"

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> ModelConfig:
        """Build from a ``dict`` (strict).

        Parameters
        ----------
        data : dict
            Field name -> value; ``arch``, ``task``, ``classes`` and ``image_size`` are required.
        source : str
            Where ``data`` came from (named in errors), e.g. ``DIR/config.json``.

        Raises
        ------
        ConfigKeyError
            Unknown or missing key (message names it and ``source``).
        """
        return strict_from_dict(cls, data, source)

    def save(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read from JSON written by :meth:`save` (strict: see :meth:`from_dict`)."""
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))
