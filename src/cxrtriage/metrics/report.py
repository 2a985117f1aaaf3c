"""One typed result for every scored prediction set: :class:`MetricReport`.

Binary and multi-class results share one set of metric names (:data:`METRIC_NAMES`):

``accuracy``
    Share of images whose call (threshold or arg-max) equals the truth.
``auroc``
    Binary: AUROC of the positive class's probability. Multi-class: the mean of
    the one-vs-rest AUROCs over the classes *present* in the data (macro).
``macro_sensitivity``
    Mean per-class sensitivity (recall) over the classes present, i.e.
    scikit-learn's ``balanced_accuracy_score``.
``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``
    Binary: of the positive class at the operating point. Multi-class: macro
    averages over the classes present (per class in :attr:`MetricReport.per_class`).

A class absent from the data has no sensitivity or AUROC; macro averages are
taken over the classes present, and :attr:`MetricReport.macro_over` names them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["METRIC_NAMES", "PER_CLASS_NAMES", "Estimate", "MetricReport", "format_estimate", "safe_div"]

#: Headline metric names, the same for binary and multi-class tasks.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "auroc",
    "macro_sensitivity",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
)

#: Per-class metric names (one-vs-rest for multi-class tasks).
PER_CLASS_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "auroc")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap 95 % interval.

    Attributes
    ----------
    value : float or None
        The metric on all images; ``None`` when undefined (e.g. AUROC with one class).
    ci95 : tuple of two floats, or None
        2.5th and 97.5th percentiles over bootstrap replicates (Efron & Tibshirani,
        1993, percentile method); ``None`` when not computed or undefined.
    """

    value: float | None
    ci95: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """``{"value": float | None, "ci95": [low, high] | None}`` (JSON-ready)."""
        return {"value": self.value, "ci95": list(self.ci95) if self.ci95 is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | float | None) -> Estimate:
        """Inverse of :meth:`to_dict`; a bare number or ``None`` is a value without interval."""
        if data is None or isinstance(data, int | float):
            return cls(None if data is None else float(data))
        ci = data.get("ci95")
        value = data.get("value")
        return cls(None if value is None else float(value), (float(ci[0]), float(ci[1])) if ci else None)

    def __str__(self) -> str:
        return format_estimate(self)


def safe_div(num: float, den: float) -> float | None:
    """``num / den`` as float, or ``None`` when ``den`` is 0 (undefined metric)."""
    return float(num) / float(den) if den else None


def format_estimate(est: Estimate | None, digits: int = 3) -> str:
    """``0.912 (0.880–0.940)``; ``–`` for a missing or undefined estimate."""
    if est is None or est.value is None:
        return "–"
    v = f"{est.value:.{digits}f}"
    return f"{v} ({est.ci95[0]:.{digits}f}–{est.ci95[1]:.{digits}f})" if est.ci95 else v


@dataclass
class MetricReport:
    """Scores of one model on one labelled image set, binary or multi-class.

    Attributes
    ----------
    task : str
        Task name (:mod:`cxrtriage.tasks`).
    classes : list of str
        All classes of the task, in logit order.
    n : int
        Number of images scored.
    class_counts : dict str -> int
        Images per true class (every class of ``classes``, zeros included).
    macro_over : list of str
        The classes present in the data, over which macro averages are taken.
    metrics : dict str -> Estimate
        Headline metrics, keys from :data:`METRIC_NAMES`.
    per_class : dict str -> dict str -> Estimate
        Class -> metric (:data:`PER_CLASS_NAMES`) -> estimate, one-vs-rest.
    confusion_matrix : list of list of int
        ``(K, K)``; rows are true classes, columns predicted, in ``classes`` order.
    positive_class : str or None
        Binary tasks: the class the threshold applies to.
    threshold : float or None
        Binary tasks: the operating point (probability of ``positive_class``, in [0, 1]).
    n_boot : int
        Bootstrap replicates behind the intervals (0 = no intervals).
    """

    task: str
    classes: list[str]
    n: int
    class_counts: dict[str, int]
    macro_over: list[str]
    metrics: dict[str, Estimate]
    per_class: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    confusion_matrix: list[list[int]] = field(default_factory=list)
    positive_class: str | None = None
    threshold: float | None = None
    n_boot: int = 0

    @property
    def is_binary(self) -> bool:
        """True for a two-class task."""
        return len(self.classes) == 2

    def value(self, name: str) -> float | None:
        """Point value of headline metric ``name`` (``None`` if undefined or absent)."""
        est = self.metrics.get(name)
        return est.value if est is not None else None

    def lookup(self, key: str) -> Estimate | None:
        """Headline metric ``key``, or per-class ``<metric>_<class>`` (e.g. ``sensitivity_COVID``).

        Returns ``None`` when no such metric exists.
        """
        if key in self.metrics:
            return self.metrics[key]
        for name in PER_CLASS_NAMES:
            cls = key[len(name) + 1 :] if key.startswith(name + "_") else None
            if cls is not None and cls in self.per_class:
                return self.per_class[cls].get(name)
        return None

    def flat_values(self, per_class: tuple[str, ...] = ("sensitivity",)) -> dict[str, float | None]:
        """Point values as one flat ``dict``: headline names, plus ``<metric>_<class>`` for ``per_class`` metrics."""
        out = {k: v.value for k, v in self.metrics.items()}
        for cls, m in self.per_class.items():
            out.update({f"{name}_{cls}": m[name].value for name in per_class if name in m})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``; :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["metrics"] = {k: v.to_dict() for k, v in self.metrics.items()}
        d["per_class"] = {c: {k: v.to_dict() for k, v in m.items()} for c, m in self.per_class.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricReport:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        KeyError
            A required field is missing (the message names it).
        """
        missing = [k for k in ("task", "classes", "n", "class_counts", "macro_over", "metrics") if k not in data]
        if missing:
            raise KeyError(f"MetricReport: missing field(s) {', '.join(missing)}")
        return cls(
            task=str(data["task"]),
            classes=list(data["classes"]),
            n=int(data["n"]),
            class_counts={str(k): int(v) for k, v in data["class_counts"].items()},
            macro_over=list(data["macro_over"]),
            metrics={k: Estimate.from_dict(v) for k, v in data["metrics"].items()},
            per_class={
                c: {k: Estimate.from_dict(v) for k, v in m.items()} for c, m in (data.get("per_class") or {}).items()
            },
            confusion_matrix=[[int(x) for x in row] for row in data.get("confusion_matrix") or []],
            positive_class=data.get("positive_class"),
            threshold=None if data.get("threshold") is None else float(data["threshold"]),
            n_boot=int(data.get("n_boot", 0)),
        )
