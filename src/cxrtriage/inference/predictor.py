"""In-process inference with a trained model (PyTorch backend of :mod:`cxrtriage.inference.backend`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.inference.backend import TorchBackend
from cxrtriage.inference.device import resolve_device
from cxrtriage.metrics.decision import decide
from cxrtriage.models.bundle import resolve_model_dir
from cxrtriage.tasks import get_task

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """The model's output for one image.

    Attributes
    ----------
    probabilities : dict str -> float
        Class probability (0-1) per class, model order.
    label : str
        Predicted class (threshold rule for binary tasks, argmax otherwise).
    label_index : int
    threshold : float or None
        Decision threshold applied to ``positive_class`` (binary tasks).
    positive_class : str
    triage : str
        ``no_finding`` when ``label`` is one of the task's normal classes, else ``finding``.
    extra : dict
        Anything else a caller attaches.
    source : str or None
        The image's path, or ``"inputs[i]"`` for an in-memory image (set by :mod:`cxrtriage.api`).
    ood_score : float or None
        Out-of-distribution score (squared Mahalanobis distance of the pooled features, >= 0)
        when the model has a detector (``cxr fit-ood``); ``None`` otherwise.
    out_of_distribution : bool or None
        ``ood_score`` above the detector's threshold: the image is atypical for the model's
        training images (reported; the server decides applicability by population, gate 2).
    refused : str or None
        Why the image was refused before use, e.g. ``"not a chest radiograph (gate 1: ...)"``;
        set by :meth:`cxrtriage.api.Model.predict` and ``cxr predict``. When set, the
        probabilities and label are not a result and must not be used.
    """

    probabilities: dict[str, float]
    label: str
    label_index: int
    threshold: float | None
    positive_class: str
    triage: str
    extra: dict = field(default_factory=dict)
    source: str | None = None
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    refused: str | None = None

    def to_dict(self) -> dict:
        """JSON-serialisable ``dict`` (OOD fields, ``refused`` and ``source`` only when set)."""
        out: dict = {
            "label": self.label,
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "threshold": self.threshold,
            "positive_class": self.positive_class,
            "triage": self.triage,
        }
        for key in ("source", "ood_score", "out_of_distribution", "refused"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class Predictor:
    """Load a model folder once and classify grayscale images.

    Parameters
    ----------
    model_dir : path, optional
        Model folder (default: the shipped model).
    threads : int
        ``torch.set_num_threads`` (2 on the reference machine).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`cxrtriage.inference.device.resolve_device`).

    Attributes
    ----------
    backend : TorchBackend
        The forward pass (channels-last, inference mode).
    model : torch.nn.Module (eval mode)
    config : ModelConfig
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 2, device: str = "cpu") -> None:
        self.backend = TorchBackend.from_dir(model_dir, threads=threads)
        self.device = resolve_device(device)
        if self.device != "cpu":
            self.backend.model.to(self.device)
        self.model = self.backend.model
        self.config: ModelConfig = self.backend.require_config()
        self.task = get_task(self.config.task)
        self.model_dir = resolve_model_dir(model_dir) if model_dir else None

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        """``uint8 (H, W)`` -> ``float32 (1, S, S)`` model input (see :func:`cxrtriage.data.transforms.preprocess`)."""
        return self.backend.preprocess(img)

    def logits(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Logits ``float32 (N, K)`` (before temperature) for ``uint8 (H, W)`` images of any size."""
        return self.backend.logits(images, batch_size)

    def probabilities(self, images: np.ndarray | Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Class probabilities, ``float64 (N, K)``, for ``uint8 (H, W)`` images of any size (temperature applied)."""
        return self.backend.probabilities(images, batch_size)

    def to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        """Wrap probability rows ``(N, K)`` into :class:`Prediction` objects with the saved decision rule."""
        return predictions_from_probs(probs, self.config)

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Classify ``uint8 (H, W)`` grayscale images."""
        return self.to_predictions(self.probabilities(images))


def predictions_from_probs(probs: np.ndarray, config: ModelConfig) -> list[Prediction]:
    """:class:`Prediction` per row of ``probs`` ``(N, K)`` under ``config``'s decision rule."""
    task = get_task(config.task)
    idx = decide(probs, config)
    preds = []
    for row, i in zip(probs, idx):
        label = config.classes[int(i)]
        preds.append(
            Prediction(
                probabilities={c: float(p) for c, p in zip(config.classes, row)},
                label=label,
                label_index=int(i),
                threshold=config.threshold,
                positive_class=config.positive_class,
                triage="no_finding" if label in task.normal_classes else "finding",
            )
        )
    return preds
