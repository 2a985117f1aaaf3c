"""A trained model on disk as one typed bundle, laid out as Hugging Face Hub / timm model repos.

Layout of a model folder::

    DIR/config.json        ModelConfig (architecture, classes, preprocessing, decision rule); strict
    DIR/model.safetensors  weights (float32 state_dict, safetensors format; no pickle)
    DIR/bundle.json        typed sections: train_config, training, split, calibration, ood, onnx, evaluation, audit
    DIR/README.md          model card with YAML front matter, rendered from the bundle
                           (:func:`cxrtriage.cards.model_card.write_card`)
    DIR/ood.npz            optional OOD statistics (means, precision), referenced by the ``ood`` section
    DIR/model.onnx         optional ONNX export, referenced by the ``onnx`` section
    DIR/history.csv, *.png training history and curves (auxiliary)

:class:`ModelBundle` is the one reader and writer of ``config.json``, ``bundle.json``
and the weights. Folders of older versions with ``model.pt`` (a pickled state_dict)
are still read, with a :class:`DeprecationWarning`; ``model.pt`` is never written.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxrtriage.config import ConfigKeyError, ModelConfig, TrainConfig, strict_from_dict
from cxrtriage.metrics.report import Estimate, MetricReport

if TYPE_CHECKING:  # torch and timm are imported by the methods that build or save a network, not by ONNX inference
    from torch import nn

__all__ = [
    "BUNDLE_JSON",
    "CONFIG_JSON",
    "WEIGHTS_FILE",
    "LEGACY_WEIGHTS_FILE",
    "README_FILE",
    "CalibrationSection",
    "OODSection",
    "SplitSection",
    "TrainingSummary",
    "OnnxSection",
    "Evaluation",
    "AuditSection",
    "ExternalValidation",
    "ModelBundle",
    "ModelLoadError",
    "metric_report_from_legacy",
    "load_model",
    "default_model_dir",
    "zoo_dir",
    "shipped_models",
    "resolve_model_dir",
]

CONFIG_JSON = "config.json"
BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
LEGACY_WEIGHTS_FILE = "model.pt"
README_FILE = "README.md"


class ModelLoadError(FileNotFoundError):
    """A model folder is missing, incomplete or invalid (message names the folder and the file)."""


@dataclass
class TrainingSummary:
    """How the weights were chosen (``cxr train``).

    Attributes
    ----------
    best_epoch : int
        1-based epoch whose weights were kept.
    select_metric : str
        Validation metric that chose it (:data:`cxrtriage.config.SELECT_METRICS`).
    epochs_run : int
        Epochs actually run (early stopping may end before ``TrainConfig.epochs``).
    wall_seconds : float
        Training wall time in seconds (resumed runs add up).
    total_seconds : float or None
        Whole build wall time (``cxr ship``: dedupe, training, calibration, test); ``None`` if not measured.
    cpu_count : int or None
        CPU cores of the machine that trained it.
    skipped : list of [path, reason]
        Images that could not be decoded.
    runtime : dict
        Where it ran (Lightning Fabric): ``device``, ``precision``, ``world_size``, ``strategy``,
        ``threads``, ``channels_last``; empty for models trained before these were recorded.
    members : list of dict
        A seed ensemble's members (``cxr ensemble``): ``name``, ``version``, ``seed``, ``best_epoch``,
        ``val_auroc``, ``wall_seconds``, ``weights_sha256`` of each; then ``best_epoch`` is 0 and ``epochs_run``
        and ``wall_seconds`` are the members' sums. Empty for a single model.
    """

    best_epoch: int
    select_metric: str = "auroc"
    epochs_run: int = 0
    wall_seconds: float = 0.0
    total_seconds: float | None = None
    cpu_count: int | None = None
    skipped: list[list[str]] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SplitSection:
    """Which images trained, validated and tested the model.

    Paths are relative to the dataset root (:func:`cxrtriage.data.split.dataset_root` of ``data``),
    so a folder keeps working when the dataset moves.

    Attributes
    ----------
    data : str
        Dataset location at training time (folder or manifest).
    seed : int
        Split seed.
    n_train, n_val : int
        Image counts.
    train_counts, val_counts : dict str -> int
        Images per class.
    val_paths_relative : list of str
        Validation images.
    val_patients : int or None
        Distinct patients (groups) in validation.
    n_test : int or None
        Held-out test images (``cxr ship``); ``None``: no held-out test.
    test_counts : dict str -> int or None
    test_paths_relative : list of str
    description : str
        How the split was made (shown on the card).
    leak_control : str
        How leakage between the parts was prevented (shown on the card).
    dropped_leaking_test_images : int
        Test images dropped because their group also occurs in training or validation.
    """

    data: str
    seed: int
    n_train: int
    n_val: int
    train_counts: dict[str, int]
    val_counts: dict[str, int]
    val_paths_relative: list[str]
    val_patients: int | None = None
    n_test: int | None = None
    test_counts: dict[str, int] | None = None
    test_paths_relative: list[str] = field(default_factory=list)
    description: str = ""
    leak_control: str = ""
    dropped_leaking_test_images: int = 0


@dataclass
class CalibrationSection:
    """Temperature scaling and operating point (``cxr calibrate``; Guo et al., ICML 2017).

    Attributes
    ----------
    temperature : float
        Softmax temperature T > 0 (equals ``ModelConfig.temperature``).
    rule : str
        ``youden``, ``sensitivity:<s>`` or ``argmax`` (multi-class).
    threshold, threshold_uncalibrated : float or None
        Operating point on the calibrated / uncalibrated validation probabilities, in [0, 1].
    n_val : int
        Validation images the temperature was fitted on.
    ece_before, ece_after : float
        Expected calibration error (15 equal-width bins, Naeini et al., AAAI 2015), in [0, 1].
    brier_before, brier_after : float
        Brier score (Brier, 1950), in [0, 2].
    nll_before, nll_after : float or None
        Mean negative log-likelihood.
    val_sensitivity, val_specificity : float or None
        Binary tasks: validation sensitivity/specificity at ``threshold``.
    test_ece_before, test_ece_after, test_brier_before, test_brier_after : float or None
        The same on the held-out test (``cxr ship``).
    method : str
        Method and references.
    val_score_histogram : dict or None
        Distribution of the calibrated validation probability of a finding (``1 - P(normal classes)``):
        ``{"edges": (B + 1,) floats in [0, 1], "counts": (B,) ints, "n": int, "score": str}``
        (:func:`cxrtriage.metrics.drift.score_histogram`; ``cxr fit-score-reference``), the reference of
        the monitoring page's drift check.
    """

    temperature: float
    rule: str
    n_val: int
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float
    threshold: float | None = None
    threshold_uncalibrated: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None
    val_sensitivity: float | None = None
    val_specificity: float | None = None
    test_ece_before: float | None = None
    test_ece_after: float | None = None
    test_brier_before: float | None = None
    test_brier_after: float | None = None
    method: str = ""
    val_score_histogram: dict[str, Any] | None = None


@dataclass
class OODSection:
    """Out-of-distribution detector (Mahalanobis distance, Lee et al., NeurIPS 2018).

    Attributes
    ----------
    file : str
        ``.npz`` beside the bundle with ``means`` ``float32 (K, D)`` and ``precision`` ``float32 (D, D)``.
    threshold : float
        Squared distance above which an image is rejected.
    stats : dict
        Fit details and measured rejection rates (``n_fit``, ``dim``, ``percentile``, ...).
    """

    threshold: float
    file: str = "ood.npz"
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class OnnxSection:
    """ONNX export (``cxr export``).

    Attributes
    ----------
    file : str
        File name beside the bundle.
    opset : int
        ONNX opset version.
    sha256 : str
        Hex SHA-256 of the file (checked when loading the ONNX backend).
    """

    file: str
    opset: int
    sha256: str


@dataclass
class ExternalValidation:
    """The model scored on a dataset from another source than its training data.

    Attributes
    ----------
    name : str
        Short dataset name (its folder name, e.g. ``ieee8023-cxr``); unique within a bundle.
    data : str
        Dataset location as given (folder or manifest).
    description : str
        What the set is and how its labels were mapped onto the task (shown on the card).
    report : MetricReport
        Metrics at the model's saved temperature and operating point, with 95 % bootstrap intervals.
    skipped : int
        Unreadable images left out.
    """

    name: str
    data: str
    description: str
    report: MetricReport
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``."""
        return {
            "name": self.name,
            "data": self.data,
            "description": self.description,
            "report": self.report.to_dict(),
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> ExternalValidation:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`cxrtriage.config.ConfigKeyError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigKeyError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} for ExternalValidation")
        missing = [k for k in ("name", "data", "report") if k not in data]
        if missing:
            raise ConfigKeyError(f"{source}: missing key(s) {', '.join(map(repr, missing))} for ExternalValidation")
        return cls(
            name=str(data["name"]),
            data=str(data["data"]),
            description=str(data.get("description", "")),
            report=MetricReport.from_dict(data["report"]),
            skipped=int(data.get("skipped", 0)),
        )


@dataclass
class Evaluation:
    """What the model card reports (``cxr ship`` / ``cxr card``).

    Attributes
    ----------
    validation : MetricReport
        Validation metrics at the saved operating point, with 95 % bootstrap intervals.
    test : MetricReport or None
        Held-out test metrics (``None``: no held-out test).
    subgroups : dict
        Column -> value -> ``{"n": int, "metrics": MetricReport-dict}`` on the held-out test.
    command : str
        The exact command that built the model.
    link : list of str
        Reference datasets used for duplicate linking only.
    external : list of ExternalValidation
        Scores on datasets from other sources (``cxr external``, ``--external``); empty when none.
    """

    validation: MetricReport
    test: MetricReport | None = None
    subgroups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    command: str = ""
    link: list[str] = field(default_factory=list)
    external: list[ExternalValidation] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``."""
        return {
            "validation": self.validation.to_dict(),
            "test": self.test.to_dict() if self.test is not None else None,
            "subgroups": self.subgroups,
            "command": self.command,
            "link": list(self.link),
            "external": [e.to_dict() for e in self.external],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> Evaluation:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`cxrtriage.config.ConfigKeyError`."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigKeyError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} for Evaluation")
        if "validation" not in data:
            raise ConfigKeyError(f"{source}: missing required key 'validation' for Evaluation")
        return cls(
            validation=MetricReport.from_dict(data["validation"]),
            test=MetricReport.from_dict(data["test"]) if data.get("test") else None,
            subgroups=dict(data.get("subgroups") or {}),
            command=str(data.get("command", "")),
            link=list(data.get("link") or []),
            external=[
                ExternalValidation.from_dict(e, f"{source} external[{i}]")
                for i, e in enumerate(data.get("external") or [])
            ],
        )


@dataclass
class AuditSection:
    """Shortcut audit of the model (``cxr audit --write-bundle``; :mod:`cxrtriage.experiments.audit`).

    Attributes
    ----------
    data : list of str
        Dataset tags the audit images came from.
    n : int
        Images audited.
    lung_mask : str
        How the lung fields were approximated (not a segmentation).
    fill : str
        Grey level of hidden pixels (``mean``: the image's mean intensity, ``grey``: 128).
    original, lungs_hidden, lungs_only : MetricReport
        Scores at the saved operating point on the images as they are, with the lung
        fields hidden, and with everything but the lung fields hidden.
    cam_in_lung : dict str -> Estimate
        True class -> mean share of the predicted class's CAM mass inside the lung mask (95 % bootstrap CI).
    lung_area : Estimate
        Mean share of the image inside the lung mask: the chance level of ``cam_in_lung``.
    source_probe : dict or None
        :meth:`cxrtriage.metrics.audit.SourceProbe.to_dict` (``auroc``, ``sources``, ``counts``,
        ``n_splits``, ``accuracy``); ``None`` with a single source.
    command : str
        The command that ran the audit.
    """

    data: list[str]
    n: int
    lung_mask: str
    fill: str
    original: MetricReport
    lungs_hidden: MetricReport
    lungs_only: MetricReport
    cam_in_lung: dict[str, Estimate] = field(default_factory=dict)
    lung_area: Estimate = field(default_factory=lambda: Estimate(None))
    source_probe: dict[str, Any] | None = None
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``."""
        return {
            "data": list(self.data),
            "n": self.n,
            "lung_mask": self.lung_mask,
            "fill": self.fill,
            "original": self.original.to_dict(),
            "lungs_hidden": self.lungs_hidden.to_dict(),
            "lungs_only": self.lungs_only.to_dict(),
            "cam_in_lung": {c: e.to_dict() for c, e in self.cam_in_lung.items()},
            "lung_area": self.lung_area.to_dict(),
            "source_probe": self.source_probe,
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> AuditSection:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`cxrtriage.config.ConfigKeyError`."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigKeyError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))} for AuditSection")
        required = ("data", "n", "lung_mask", "fill", "original", "lungs_hidden", "lungs_only")
        missing = [k for k in required if k not in data]
        if missing:
            raise ConfigKeyError(f"{source}: missing key(s) {', '.join(map(repr, missing))} for AuditSection")
        return cls(
            data=[str(d) for d in data["data"]],
            n=int(data["n"]),
            lung_mask=str(data["lung_mask"]),
            fill=str(data["fill"]),
            original=MetricReport.from_dict(data["original"]),
            lungs_hidden=MetricReport.from_dict(data["lungs_hidden"]),
            lungs_only=MetricReport.from_dict(data["lungs_only"]),
            cam_in_lung={str(c): Estimate.from_dict(e) for c, e in (data.get("cam_in_lung") or {}).items()},
            lung_area=Estimate.from_dict(data.get("lung_area")),
            source_probe=dict(data["source_probe"]) if data.get("source_probe") else None,
            command=str(data.get("command", "")),
        )


_LEGACY_NAMES = {"macro_auroc": "auroc", "macro_ppv": "ppv", "macro_f1": "f1", "macro_npv": "npv"}
_PER_CLASS_PREFIXES = ("sensitivity", "specificity", "ppv", "npv", "f1", "auroc")


def metric_report_from_legacy(
    metrics: dict[str, Any],
    task: str,
    classes: list[str],
    class_counts: dict[str, int],
    positive_class: str | None = None,
    threshold: float | None = None,
) -> MetricReport:
    """Convert an old-style metric dict to a :class:`MetricReport` (the bundle stores only the latter).

    Parameters
    ----------
    metrics : dict
        Name -> ``{"value", "ci95"}`` (or a bare number) as written by
        :func:`cxrtriage.metrics.intervals.bootstrap_intervals`, plus ``n_boot``.
        ``macro_auroc``/``macro_ppv``/``macro_f1`` become ``auroc``/``ppv``/``f1``;
        ``<metric>_<class>`` entries become :attr:`MetricReport.per_class`; names
        outside :data:`cxrtriage.metrics.report.METRIC_NAMES` (e.g. ``weighted_f1``) are dropped.
    task : str
    classes : list of str
        Logit order.
    class_counts : dict str -> int
        Images per true class (``n`` is their sum).
    positive_class, threshold : optional
        Binary operating point.

    Returns
    -------
    MetricReport
    """
    from cxrtriage.metrics.report import METRIC_NAMES

    head: dict[str, Estimate] = {}
    per_class: dict[str, dict[str, Estimate]] = {}
    for key, val in metrics.items():
        if key == "n_boot" or isinstance(val, list):
            continue
        name = _LEGACY_NAMES.get(key, key)
        if name in METRIC_NAMES:
            head[name] = Estimate.from_dict(val)
            continue
        prefix, _, cls = key.partition("_")
        if prefix in _PER_CLASS_PREFIXES and cls in classes:
            per_class.setdefault(cls, {})[prefix] = Estimate.from_dict(val)
    counts = {c: int(class_counts.get(c, 0)) for c in classes}
    return MetricReport(
        task=task,
        classes=list(classes),
        n=sum(counts.values()),
        class_counts=counts,
        macro_over=[c for c in classes if counts[c] > 0],
        metrics=head,
        per_class=per_class,
        positive_class=positive_class or None,
        threshold=threshold,
        n_boot=int(metrics.get("n_boot", 0) or 0),
    )


_SECTIONS: dict[str, type] = {
    "train_config": TrainConfig,
    "training": TrainingSummary,
    "split": SplitSection,
    "calibration": CalibrationSection,
    "ood": OODSection,
    "onnx": OnnxSection,
    "evaluation": Evaluation,
    "audit": AuditSection,
}


@dataclass
class ModelBundle:
    """A model folder: config, typed sections and (lazily) the weights.

    Attributes
    ----------
    config : ModelConfig
        ``config.json``.
    train_config : TrainConfig or None
        The training run's settings.
    training : TrainingSummary or None
    split : SplitSection or None
    calibration : CalibrationSection or None
    ood : OODSection or None
    onnx : OnnxSection or None
    evaluation : Evaluation or None
        What the model card reports.
    audit : AuditSection or None
        Shortcut audit (``cxr audit --write-bundle``).
    directory : Path or None
        The folder it was loaded from or last saved to.
    """

    config: ModelConfig
    train_config: TrainConfig | None = None
    training: TrainingSummary | None = None
    split: SplitSection | None = None
    calibration: CalibrationSection | None = None
    ood: OODSection | None = None
    onnx: OnnxSection | None = None
    evaluation: Evaluation | None = None
    audit: AuditSection | None = None
    directory: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """Folder name (the model's name on cards and in the zoo); ``config.version`` if unsaved."""
        return self.directory.name if self.directory is not None else self.config.version

    def sections_dict(self) -> dict[str, Any]:
        """``bundle.json`` content: section name -> JSON-ready dict (absent sections omitted)."""
        out: dict[str, Any] = {}
        for key in _SECTIONS:
            val = getattr(self, key)
            if val is None:
                continue
            out[key] = val.to_dict() if hasattr(val, "to_dict") else asdict(val)
        return out

    def save(self, directory: str | Path, model: nn.Module | None = None, *, float16: bool = False) -> Path:
        """Write ``config.json``, ``bundle.json`` and, when ``model`` is given, ``model.safetensors``.

        Parameters
        ----------
        directory : path
            Model folder (created if needed).
        model : nn.Module, optional
            Its ``state_dict`` is stored as contiguous float32 tensors (integer buffers as they are).
            A stale ``model.pt`` of an older version is removed when new weights are written.
        float16 : bool
            Store the floating-point tensors as float16 instead (half the size; :meth:`load_model` computes in
            float32 with the rounded values, and the ONNX export keeps them in float16 too).

        Returns
        -------
        pathlib.Path
            The model folder.
        """
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if model is not None:
            state = {
                k: ((v.detach().half() if float16 else v.detach().float()) if v.is_floating_point() else v.detach())
                .contiguous()
                .clone()
                for k, v in model.state_dict().items()
            }
            tmp = d / f".{WEIGHTS_FILE}.tmp"
            save_file(state, str(tmp), metadata={"format": "pt", "arch": self.config.arch})
            tmp.replace(d / WEIGHTS_FILE)
            (d / LEGACY_WEIGHTS_FILE).unlink(missing_ok=True)
        self.config.save(d / CONFIG_JSON)
        tmp = d / f".{BUNDLE_JSON}.tmp"
        tmp.write_text(json.dumps(self.sections_dict(), indent=1, ensure_ascii=False) + "\n")
        tmp.replace(d / BUNDLE_JSON)
        self.directory = d
        return d

    @classmethod
    def load(cls, directory: str | Path | None = None) -> ModelBundle:
        """Read ``config.json`` and ``bundle.json`` of a model folder (weights: :meth:`load_model`).

        Parameters
        ----------
        directory : path, str or None
            Folder or shipped model name (:func:`resolve_model_dir`); ``None``: the default model.

        Returns
        -------
        ModelBundle

        Raises
        ------
        ModelLoadError
            No such folder or no ``config.json``.
        cxrtriage.config.ConfigKeyError
            ``config.json`` or a ``bundle.json`` section has an unknown key or lacks a required one
            (the message names the key and the file).
        """
        d = resolve_model_dir(directory)
        cfg_path = d / CONFIG_JSON
        if not cfg_path.is_file():
            raise ModelLoadError(f"{d}: not a model folder ({CONFIG_JSON} missing)")
        try:
            raw_cfg = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{cfg_path}: cannot read ({exc})") from None
        config = ModelConfig.from_dict(raw_cfg, source=str(cfg_path))
        bundle = cls(config=config, directory=d)
        bpath = d / BUNDLE_JSON
        if bpath.is_file():
            raw = json.loads(bpath.read_text())
            unknown = sorted(set(raw) - set(_SECTIONS))
            if unknown:
                raise ConfigKeyError(f"{bpath}: unknown section(s) {', '.join(map(repr, unknown))}")
            for key, typ in _SECTIONS.items():
                if raw.get(key) is None:
                    continue
                source = f"{bpath} [{key}]"
                value = (
                    typ.from_dict(raw[key], source)
                    if hasattr(typ, "from_dict")
                    else strict_from_dict(typ, raw[key], source)
                )
                setattr(bundle, key, value)
        return bundle

    def weights_path(self) -> Path:
        """The weights file: ``model.safetensors``, else a legacy ``model.pt``.

        Raises
        ------
        ModelLoadError
            Neither exists (or the bundle was never saved).
        """
        if self.directory is None:
            raise ModelLoadError("bundle has no folder (save it first)")
        for name in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE):
            if (self.directory / name).is_file():
                return self.directory / name
        raise ModelLoadError(f"{self.directory}: not a model folder ({WEIGHTS_FILE} missing)")

    def load_model(self) -> nn.Module:
        """Build the architecture and load the weights.

        Returns
        -------
        nn.Module
            In eval mode on the CPU.

        Raises
        ------
        ModelLoadError
            Weights missing or not matching the architecture.
        """
        import torch
        from safetensors.torch import load_file

        from cxrtriage.models.registry import create_model

        path = self.weights_path()
        try:
            if self.config.members > 1:
                from cxrtriage.models.ensemble import ensemble_skeleton

                model: nn.Module = ensemble_skeleton(self.config.arch, len(self.config.classes), self.config.members)
            else:
                model = create_model(self.config.arch, len(self.config.classes), pretrained=False)
            if path.name == WEIGHTS_FILE:
                state = load_file(str(path), device="cpu")
            else:
                warnings.warn(
                    f"{path}: pickled model.pt weights are deprecated; convert the folder with "
                    "scripts/convert_zoo.py (writes model.safetensors)",
                    DeprecationWarning,
                    stacklevel=2,
                )
                state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"{path.parent}: cannot load model ({exc})") from None
        return model.eval()

    def weights_mb(self) -> float:
        """Size of the weights file in MB (10^6 bytes)."""
        return self.weights_path().stat().st_size / 1e6


def zoo_dir() -> Path:
    """Folder of the shipped models (``cxrtriage/zoo``), one model folder per entry."""
    return Path(__file__).resolve().parent.parent / "zoo"


def default_model_dir() -> Path:
    """The shipped default model: ``cxrtriage/zoo/pneumonia-efficientnet_lite0``."""
    return zoo_dir() / "pneumonia-efficientnet_lite0"


def shipped_models() -> list[str]:
    """Names of the shipped models (sub-folders of :func:`zoo_dir` with a ``config.json``), sorted."""
    return sorted(p.parent.name for p in zoo_dir().glob(f"*/{CONFIG_JSON}"))


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
    if d.name == str(value) and (zoo_dir() / d.name / CONFIG_JSON).is_file():
        return zoo_dir() / d.name
    raise ModelLoadError(
        f"{value}: no such model folder and not a shipped model (shipped: {', '.join(shipped_models())})"
    )


def load_model(directory: str | Path | None = None) -> tuple[nn.Module, ModelConfig]:
    """Load a model folder's network and config (:meth:`ModelBundle.load` + :meth:`ModelBundle.load_model`).

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
        Folder, ``config.json`` or the weights missing, unreadable or invalid.
    """
    try:
        bundle = ModelBundle.load(directory)
    except ConfigKeyError as exc:
        raise ModelLoadError(str(exc)) from None
    return bundle.load_model(), bundle.config
