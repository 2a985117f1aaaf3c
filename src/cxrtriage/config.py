"""Typed configuration: the one place where run and model settings live.

``TrainConfig`` holds everything ``cxr train`` needs; ``ModelConfig`` is what a
trained model carries with it (``config.json`` in the model folder) so that
evaluation, prediction and serving prepare inputs and take decisions exactly as
training did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "TrainConfig",
    "ModelConfig",
    "ScoreConfig",
    "ConfigKeyError",
    "check_device",
    "strict_from_dict",
    "SELECT_METRICS",
    "OPTIMIZERS",
    "BALANCE_MODES",
    "INTENSITY_METHODS",
    "DEVICES",
    "RUNTIME_FIELDS",
    "AUGMENT_LEVELS",
    "LUNG_INPUTS",
    "SegmenterConfig",
    "SegmenterTrainConfig",
]

#: Validation metrics that may choose the best epoch (``TrainConfig.select_metric``);
#: ``macro_sensitivity`` is scikit-learn's balanced accuracy of the arg-max call.
SELECT_METRICS = ("auroc", "macro_sensitivity")

#: Optimiser names (``TrainConfig.optimizer``), as understood by ``timm.optim.create_optimizer_v2``.
OPTIMIZERS = ("adamw", "adam", "sgd", "adagrad")

#: Class-imbalance handling (``TrainConfig.balance``).
BALANCE_MODES = ("sampler", "loss", "none")

#: Intensity normalisation methods (``TrainConfig.intensity``; see :func:`cxrtriage.data.transforms.normalize_intensity`).
INTENSITY_METHODS = ("equalize", "equalize-lungs", "minmax", "none")

#: Training augmentation levels (``TrainConfig.augment``; see :func:`cxrtriage.data.transforms.build_train_transform`).
AUGMENT_LEVELS = ("standard", "strong")

#: What a classifier sees (``ModelConfig.input``): the whole image, the image with everything outside the lung
#: fields set to 0 (``lungs``), or the lungs' bounding box with a margin (``lung-crop``); the lung mask comes from
#: the shipped lung segmenter (:mod:`cxrtriage.segment`).
LUNG_INPUTS = ("full", "lungs", "lung-crop")
#: augmentation strengths of ``cxr train-segmenter`` (``cxrtriage.training.segmenter.build_segment_augment``)
SEGMENT_AUGMENTS = ("standard", "mild")

#: Device kinds (``TrainConfig.device``, ``ScoreConfig.device`` and ``--device`` of the other commands): ``auto``
#: picks CUDA when available, else CPU; ``cuda:N`` names one GPU (:func:`check_device`).
DEVICES = ("auto", "cpu", "cuda")

#: Training precisions besides Lightning Fabric's own names: ``auto`` is ``bf16-mixed`` on a GPU that supports
#: bfloat16, else ``16-mixed`` (float16 autocast with a gradient scaler) on a GPU, and ``32-true`` on the CPU.
PRECISION_AUTO = "auto"

#: ``TrainConfig`` fields that say where a run executes, not what it computes: a resumed run takes them
#: from the new invocation, every other field from the checkpoint.
RUNTIME_FIELDS = ("device", "devices", "strategy", "threads", "workers", "compile", "precision")


def check_device(device: str) -> str:
    """Validate a device string: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``N >= 0``).

    Returns
    -------
    str
        ``device`` unchanged.

    Raises
    ------
    ValueError
        Any other value (the message lists the accepted forms).
    """
    kind, _, index = device.partition(":")
    if kind in DEVICES and not index and ":" not in device:
        return device
    if kind == "cuda" and index.isdigit():
        return device
    raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def parse_widths(text: str) -> str:
    """Validate U-Net decoder widths given as five comma-separated positive ints, deepest first.

    Returns
    -------
    str
        The widths re-joined without spaces (``"64,32,16,16,8"``).

    Raises
    ------
    ValueError
        Not five positive integers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 5 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"decoder widths {text!r}: five comma-separated positive integers expected, e.g. 128,64,32,16,8"
        )
    return ",".join(str(int(p)) for p in parts)


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


def _opt(
    default: Any, help: str, choices: tuple[str, ...] | None = None, parse: Callable[[str], Any] | None = None
) -> Any:
    """A dataclass field whose help text, choices and command-line parser live with it (``cxrtriage.cli.config_args``)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if parse is not None:
        meta["parse"] = parse
    return field(default=default, metadata=meta)


def _document_fields(cls: type) -> type:
    """Append a NumPy-style ``Attributes`` section built from the fields' ``help`` metadata to ``cls.__doc__``."""
    lines = ["", "    Attributes", "    ----------"]
    for f in fields(cls):
        lines.append(f"    {f.name} : {f.type}")
        text = f.metadata.get("help", "").rstrip(".") + "."
        if "choices" in f.metadata:
            text += " One of " + ", ".join(f"``{c}``" for c in f.metadata["choices"]) + "."
        lines.append(f"        {text} Default ``{f.default!r}``.")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


@_document_fields
@dataclass
class TrainConfig:
    """Settings of one training run (``cxr train``).

    Each field carries its help text (and choices) in its ``metadata``: the one place the CLI
    (``cxrtriage.cli.config_args``) and this docstring read them from. ``cxr train --help`` lists them with
    their defaults.
    """

    task: str = _opt("pneumonia", "task name from cxrtriage.tasks.TASKS")
    data: str = _opt("", "dataset folder (ImageFolder layout or with manifest.csv) or a manifest CSV")
    out: str = _opt("runs/model", "output folder: the trained model, checkpoints, history and curves")
    arch: str = _opt("efficientnet_lite0", "model name from the registry (cxr models --list / list_models())")
    image_size: int = _opt(224, "square input side in pixels (64-512)")
    epochs: int = _opt(5, "maximum number of epochs")
    batch_size: int = _opt(32, "images per optimisation step")
    lr: float = _opt(
        1e-3,
        "peak learning rate: linear warm-up over the first third of an epoch, then cosine decay per "
        "iteration to 2% of it (timm CosineLRScheduler)",
    )
    optimizer: str = _opt(
        "adamw", "optimiser from timm.optim.create_optimizer_v2 (sgd: Nesterov momentum 0.9)", OPTIMIZERS
    )
    weight_decay: float = _opt(1e-4, "decoupled (AdamW) or L2 weight decay, on all parameters")
    balance: str = _opt(
        "sampler",
        "class-imbalance handling: weighted random sampler, inverse-frequency class weights in the loss, or none",
        BALANCE_MODES,
    )
    patience: int = _opt(3, "early stopping patience (epochs without improvement of the selection metric)")
    val_fraction: float = _opt(0.15, "validation share of the patient-level split when the data has no val split")
    seed: int = _opt(0, "seed for the split, initialisation, batch order and augmentation")
    split_seed: int | None = _opt(
        None,
        "seed of the patient-level validation split only (default: --seed); members of a seed ensemble share it, "
        "so none of them has trained on another's validation images",
    )
    intensity: str = _opt("equalize", "intensity normalisation", INTENSITY_METHODS)
    input: str = _opt(
        "full",
        "what the network sees: the full image, the lung fields only (outside set to 0) or the lungs' bounding "
        "box (lung-crop); the shipped lung segmenter draws the mask, at training and at every inference",
        LUNG_INPUTS,
    )
    augment: str = _opt(
        "standard",
        "training augmentation: standard (affine, blur/sharpen, gamma, brightness/contrast) or strong (adds a "
        "random resized crop, CLAHE, Gaussian noise and JPEG re-compression)",
        AUGMENT_LEVELS,
    )
    aux_task: str | None = _opt(
        None,
        "auxiliary head trained on a finer task's labels of the same images (e.g. pneumonia-type for pneumonia: "
        "normal / bacterial / viral); it only shapes the features and is dropped from the saved model",
    )
    aux_weight: float = _opt(0.5, "weight of the auxiliary head's cross-entropy in the training loss")
    ema_decay: float | None = _opt(
        None,
        "keep an exponential moving average of the weights with this decay (e.g. 0.998; timm ModelEmaV3 with "
        "warm-up); the averaged weights are validated, selected and saved",
    )
    hflip: bool = _opt(False, "random horizontal flips (off by default: a flip puts the heart on the right)")
    label_smoothing: float = _opt(0.1, "cross-entropy label smoothing (0 = none)")
    drop_rate: float = _opt(0.2, "dropout before the classifier (cnn4 uses at least 0.5)")
    pretrained: bool = _opt(True, "start from ImageNet weights where a packaged source exists")
    threads: int = _opt(2, "torch CPU threads (torch.set_num_threads)")
    channels_last: bool = _opt(True, "channels-last memory format (faster convolutions on CPU)")
    max_train_images: int | None = _opt(None, "cap on training images (stratified random subset) for quick runs")
    cache_dir: str | None = _opt(None, "decoded-image cache folder (default $CXRTRIAGE_CACHE or ~/.cache/cxrtriage)")
    threshold_rule: str = _opt(
        "youden", "how the binary decision threshold is chosen on validation: youden or sensitivity:<target>"
    )
    select_metric: str = _opt(
        "auroc",
        "validation metric that picks the best epoch and drives early stopping: auroc (macro one-vs-rest for "
        "multi-class tasks) or macro_sensitivity (balanced accuracy of the arg-max call)",
        SELECT_METRICS,
    )
    device: str = _opt(
        "auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N (one GPU)", parse=check_device
    )
    precision: str = _opt(
        PRECISION_AUTO,
        "auto (bf16-mixed on a GPU with bfloat16, else 16-mixed with a gradient scaler on a GPU; 32-true on CPU) "
        "or a Lightning Fabric precision: 32-true, bf16-mixed, 16-mixed",
    )
    devices: int = _opt(
        1,
        "devices (processes) on this node for Lightning Fabric; more than 1 means data-parallel (under torchrun "
        "the launcher's process count is used)",
    )
    strategy: str = _opt("auto", "Lightning Fabric strategy, e.g. auto, ddp (launch with torchrun for several nodes)")
    workers: int = _opt(0, "DataLoader worker processes for augmentation (0: in the training process)")
    compile: bool = _opt(False, "torch.compile the model (needs a C++ compiler; pays off on GPUs and long runs)")

    def __post_init__(self) -> None:
        check_device(self.device)

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


@_document_fields
@dataclass
class ScoreConfig:
    """Settings of streaming batch scoring (``cxr score``, :func:`cxrtriage.inference.score.score`).

    The output is a Parquet dataset: a folder of ``part-*.parquet`` files, one per ``rows_per_part`` images,
    each written whole (temporary name, then renamed), so a crash loses at most one part and a re-run skips
    the images already in it.
    """

    data: str = _opt("", "folder of images (searched recursively) or a CSV manifest with a path column")
    out: str = _opt("predictions.parquet", "output Parquet dataset (a folder of part files)")
    model: str | None = _opt(None, "model folder or shipped model name (default: the shipped pneumonia model)")
    batch_size: int = _opt(32, "images per forward pass")
    workers: int = _opt(0, "decoding worker processes (0: each stream decodes its own batch)")
    streams: int = _opt(
        0,
        "batches in flight at once, each run by its own thread (0: one per CPU core, at most 8, on the CPU; 1 on a GPU)",
    )
    threads: int = _opt(1, "threads of each forward pass (ONNX Runtime intra-op or torch)")
    device: str = _opt("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N", parse=check_device)
    heatmaps: bool = _opt(False, "write CAM heatmap PNGs of the images called positive (finding) beside OUT")
    rows_per_part: int = _opt(2048, "images per Parquet part file (what a crash can lose at most)")

    def __post_init__(self) -> None:
        check_device(self.device)
        for name in ("batch_size", "rows_per_part", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "streams"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return asdict(self)


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
    population : {"pediatric", "adult"} or None
        The population the model was trained and validated on (gate 2,
        :data:`cxrtriage.ood.population.POPULATIONS`): the server shows the model's
        result on an image of another population with a warning. None: not declared (never warned).
    input : {"full", "lungs", "lung-crop"}
        What the network sees (:data:`LUNG_INPUTS`); ``lungs`` and ``lung-crop`` put the shipped lung
        segmenter in front of the model, at training and at every inference (:mod:`cxrtriage.segment`).
    members : int
        1: one network of ``arch``; ``M > 1``: a seed ensemble of ``M`` such networks whose logits are averaged
        (:class:`cxrtriage.models.ensemble.SeedEnsemble`, built by ``cxr ensemble``).
    segmenter_sha256 : str or None
        ``input`` ``lungs`` / ``lung-crop`` only: SHA-256 (64 lower-case hex digits) of the lung segmenter's
        ``model.onnx`` the model was trained and validated with (recorded by ``cxr train``). The lung step
        refuses any other segmenter (:func:`cxrtriage.inference.lung_input.check_segmenter`): the model's
        figures, threshold and temperature hold for those masks only. None: not recorded (``input: full``, or
        a model trained before the field existed), never checked.

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
    population: str | None = None
    input: str = "full"
    members: int = 1
    segmenter_sha256: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.members, int) or self.members < 1:
            raise ValueError(f"members {self.members!r}: an integer >= 1 expected")
        sha = self.segmenter_sha256
        if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
            raise ValueError(f"segmenter_sha256 {sha!r}: 64 lower-case hex digits or null expected")
        if self.population not in (None, "pediatric", "adult"):
            raise ValueError(f"population {self.population!r}: 'pediatric', 'adult' or null expected")
        if self.input not in LUNG_INPUTS:
            raise ValueError(f"input {self.input!r}: one of {', '.join(LUNG_INPUTS)} expected")

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


@dataclass
class SegmenterConfig:
    """What a trained lung segmenter needs at inference time (``config.json`` of its folder).

    Attributes
    ----------
    arch : str
        Network: ``unet-efficientnet_lite0`` (segmentation-models-pytorch U-Net, timm encoder).
    image_size : int
        Square network input side, pixels; masks are resized back to each input's own size.
    intensity : str
        Intensity normalisation before standardisation (:data:`INTENSITY_METHODS`).
    mean, std : float
        Standardisation on the [0, 1] scale.
    decoder_channels : list of int
        U-Net decoder widths, deepest first.
    threshold : float
        Probability at or above which a pixel is lung, in (0, 1).
    min_fraction, max_fraction : float
        A mask covering less than ``min_fraction`` or more than ``max_fraction`` of the image (after
        post-processing) is a failed segmentation: flagged, never used.
    keep_components : int
        Connected components kept (the largest ones; 2 = the two lungs).
    onnx_precision : str
        What ``model.onnx`` holds: ``int8`` (static QDQ quantisation, per-channel weights, calibrated on training
        images; about a third faster on the CPU) or ``fp32`` (the exported network as is).
    version : str
        Version string shown in cards and reports.
    """

    arch: str = "unet-efficientnet_lite0"
    image_size: int = 160
    intensity: str = "equalize"
    mean: float = 0.5
    std: float = 0.5
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32, 16, 8])
    threshold: float = 0.5
    min_fraction: float = 0.05
    max_fraction: float = 0.50
    keep_components: int = 2
    onnx_precision: str = "int8"
    version: str = "0"

    def __post_init__(self) -> None:
        if self.onnx_precision not in ("int8", "fp32"):
            raise ValueError(f"onnx_precision {self.onnx_precision!r}: 'int8' or 'fp32' expected")
        if self.intensity not in INTENSITY_METHODS:
            raise ValueError(f"intensity {self.intensity!r}: one of {', '.join(INTENSITY_METHODS)} expected")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.min_fraction < self.max_fraction <= 1.0:
            raise ValueError(
                f"need 0 <= min_fraction < max_fraction <= 1, got {self.min_fraction}, {self.max_fraction}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> SegmenterConfig:
        """Build from a ``dict`` (strict: an unknown key raises :class:`ConfigKeyError` naming it and ``source``)."""
        return strict_from_dict(cls, data, source)


@_document_fields
@dataclass
class SegmenterTrainConfig:
    """Settings of one lung-segmenter training run (``cxr train-segmenter``).

    The network, loss and augmentation are fixed by :mod:`cxrtriage.training.segmenter`; these fields are
    what a run may change. Each field carries its help text for the command line.
    """

    data: str = _opt("", "mask dataset folder with manifest.csv (image, mask[, label]) such as shared/data/lung-masks")
    out: str = _opt("runs/lung-segmenter", "output folder: the segmenter bundle, checkpoints and history")
    image_size: int = _opt(160, "square network input side in pixels")
    decoder_channels: str = _opt(
        "128,64,32,16,8",
        "U-Net decoder widths, deepest first (five comma-separated ints; narrower is faster at inference)",
        parse=parse_widths,
    )
    epochs: int = _opt(10, "maximum number of epochs")
    batch_size: int = _opt(16, "images per optimisation step")
    lr: float = _opt(2e-3, "peak learning rate (warm-up then cosine decay per step, timm CosineLRScheduler)")
    optimizer: str = _opt("adamw", "optimiser from timm.optim.create_optimizer_v2", OPTIMIZERS)
    weight_decay: float = _opt(1e-4, "decoupled weight decay")
    patience: int = _opt(4, "early stopping patience (epochs without a validation Dice gain)")
    val_fraction: float = _opt(0.15, "validation share of the patient-level split")
    seed: int = _opt(0, "seed for the split, initialisation, batch order and augmentation")
    intensity: str = _opt("equalize", "intensity normalisation", INTENSITY_METHODS)
    pretrained: bool = _opt(True, "initialise the encoder from the packaged EfficientNet-Lite0 ImageNet weights")
    init: str | None = _opt(
        None, "start from the weights of this segmenter folder (fine-tuning); overrides --pretrained"
    )
    augment: str = _opt(
        "standard", "augmentation strength: standard or mild (half the warp and intensity ranges)", SEGMENT_AUGMENTS
    )
    max_train_images: int | None = _opt(None, "cap on training images (random subset) for quick runs")
    max_val_images: int | None = _opt(None, "cap on validation images (random subset) for quick runs")
    threads: int = _opt(2, "torch CPU threads")
    device: str = _opt("auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N", parse=check_device)
    precision: str = _opt(PRECISION_AUTO, "auto or a Lightning Fabric precision: 32-true, bf16-mixed, 16-mixed")
    devices: int = _opt(1, "devices (processes) for Lightning Fabric")
    strategy: str = _opt("auto", "Lightning Fabric strategy")
    cache_dir: str | None = _opt(None, "decoded-image cache folder (default $CXRTRIAGE_CACHE or ~/.cache/cxrtriage)")

    def __post_init__(self) -> None:
        check_device(self.device)
        self.decoder_channels = parse_widths(self.decoder_channels)

    @property
    def decoder_widths(self) -> list[int]:
        """:attr:`decoder_channels` as a list of 5 ints (deepest first)."""
        return [int(w) for w in self.decoder_channels.split(",")]

    def to_dict(self) -> dict[str, Any]:
        """Plain ``dict`` (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> SegmenterTrainConfig:
        """Build from a ``dict`` (strict: an unknown key raises :class:`ConfigKeyError`)."""
        return strict_from_dict(cls, data, source)
