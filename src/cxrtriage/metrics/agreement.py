"""Agreement of a deployed model with the radiologists' signed reads, and the triage benefit.

After deployment the reference standard is the reader's own label recorded at sign-off. Taking
"the reader called a finding" as the truth and "the model raised a flag" as the call, the model's
sensitivity, specificity, PPV and NPV against signed reads are the definitions of
:mod:`cxrtriage.metrics.classification` (``safe_div``: undefined when the denominator is 0) on the 2x2 table,
with the project's percentile-bootstrap 95 % intervals (:func:`cxrtriage.metrics.intervals.bootstrap_intervals`;
Efron & Tibshirani 1993). Turnaround (received -> signed) is summarised
by its median with a bootstrap interval, separately for flagged and unflagged studies: a triage
worklist should shorten it for the flagged ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrtriage.metrics.intervals import bootstrap_intervals
from cxrtriage.metrics.report import Estimate, safe_div

__all__ = ["AGREEMENT_METRICS", "Agreement", "agreement", "agreement_over_time", "TurnaroundSummary", "turnaround"]

#: The metrics reported against signed reads.
AGREEMENT_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "accuracy")

_CLASSES = ["no_finding", "finding"]


@dataclass
class Agreement:
    """Model flags against signed reads.

    Attributes
    ----------
    n : int
        Signed reads compared.
    n_reader_positive : int
        Reads in which the radiologist called a finding.
    n_flagged : int
        Studies the model flagged.
    counts : dict str -> int
        ``tp``, ``fp``, ``fn``, ``tn`` (the reader's call is the truth).
    metrics : dict str -> Estimate
        :data:`AGREEMENT_METRICS` with percentile-bootstrap 95 % intervals.
    """

    n: int
    n_reader_positive: int
    n_flagged: int
    counts: dict[str, int]
    metrics: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict`` (estimates as ``{"value", "ci95"}``)."""
        return {
            "n": self.n,
            "n_reader_positive": self.n_reader_positive,
            "n_flagged": self.n_flagged,
            "counts": dict(self.counts),
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
        }


def _bools(x: Sequence[bool] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {a.shape}")
    return a.astype(bool)


def agreement(
    reader_positive: Sequence[bool] | np.ndarray,
    model_flag: Sequence[bool] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Agreement:
    """Sensitivity, specificity, PPV, NPV and accuracy of model flags against the readers' calls.

    Parameters
    ----------
    reader_positive : bool array-like ``(N,)``
        True where the signed read called a finding (the reference standard).
    model_flag : bool array-like ``(N,)``
        True where the model flagged the study.
    n_boot : int
        Bootstrap replicates of the intervals (0: none).
    seed : int
        Bootstrap seed.

    Returns
    -------
    Agreement

    Raises
    ------
    ValueError
        Arrays of different lengths or not one-dimensional.
    """
    y = _bools(reader_positive, "reader_positive")
    f = _bools(model_flag, "model_flag")
    if y.shape != f.shape:
        raise ValueError(f"reader_positive ({y.size}) and model_flag ({f.size}) differ in length")
    counts = {
        "tp": int((y & f).sum()),
        "fp": int((~y & f).sum()),
        "fn": int((y & ~f).sum()),
        "tn": int((~y & ~f).sum()),
    }
    out = Agreement(int(y.size), int(y.sum()), int(f.sum()), counts)
    if y.size == 0:
        out.metrics = {k: Estimate(None) for k in AGREEMENT_METRICS}
        return out
    point = _agreement_point(y, f)
    ci = bootstrap_intervals(_resampled(y, f), y.size, n_boot=n_boot, seed=seed)
    out.metrics = {k: Estimate(point[k], ci.get(k) if point[k] is not None else None) for k in AGREEMENT_METRICS}
    return out


def _resampled(y: np.ndarray, f: np.ndarray) -> Callable[[np.ndarray], dict[str, float | None]]:
    """Bootstrap statistic: :func:`_agreement_point` on the resampled rows."""

    def stat(idx: np.ndarray) -> dict[str, float | None]:
        return _agreement_point(y[idx], f[idx])

    return stat


def _agreement_point(y: np.ndarray, f: np.ndarray) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV, accuracy of calls ``f`` against truth ``y`` (both bool ``(N,)``)."""
    tp = int((y & f).sum())
    fp = int((~y & f).sum())
    fn = int((y & ~f).sum())
    tn = int(y.size) - tp - fp - fn
    return {
        "sensitivity": safe_div(tp, tp + fn),
        "specificity": safe_div(tn, tn + fp),
        "ppv": safe_div(tp, tp + fp),
        "npv": safe_div(tn, tn + fn),
        "accuracy": safe_div(tp + tn, y.size),
    }


def agreement_over_time(
    periods: Sequence[str],
    reader_positive: Sequence[bool] | np.ndarray,
    model_flag: Sequence[bool] | np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> list[tuple[str, Agreement]]:
    """:func:`agreement` per period (e.g. ISO week of the sign-off), periods in sorted order.

    Parameters
    ----------
    periods : sequence of str ``(N,)``
        Period label of each read; labels sort chronologically (e.g. ``2026-W48``).
    reader_positive, model_flag : bool array-like ``(N,)``
    n_boot, seed
        As in :func:`agreement` (fewer replicates by default: one report per period).

    Returns
    -------
    list of (period, Agreement)
    """
    p = np.asarray(list(periods), dtype=object)
    y = _bools(reader_positive, "reader_positive")
    f = _bools(model_flag, "model_flag")
    if not (p.size == y.size == f.size):
        raise ValueError("periods, reader_positive and model_flag must have the same length")
    return [(str(k), agreement(y[p == k], f[p == k], n_boot=n_boot, seed=seed)) for k in sorted(set(p.tolist()))]


def _median_of(g: np.ndarray) -> Callable[[np.ndarray], dict[str, float | None]]:
    """Bootstrap statistic: the median of ``g`` at the resampled indices."""

    def stat(idx: np.ndarray) -> dict[str, float | None]:
        return {"median": float(np.median(g[idx]))}

    return stat


@dataclass(frozen=True)
class TurnaroundSummary:
    """Received -> signed times of one group of studies, minutes.

    Attributes
    ----------
    n : int
    median : Estimate
        Median with a percentile-bootstrap 95 % interval.
    p90 : float or None
        90th percentile.
    """

    n: int
    median: Estimate
    p90: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict``."""
        return {"n": self.n, "median": self.median.to_dict(), "p90": self.p90}


def turnaround(
    minutes: Sequence[float] | np.ndarray,
    flagged: Sequence[bool] | np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, TurnaroundSummary]:
    """Turnaround (received -> first signature) for flagged and unflagged studies.

    Parameters
    ----------
    minutes : float array-like ``(N,)``
        Received -> signed, minutes (>= 0).
    flagged : bool array-like ``(N,)``
        Whether the model flagged the study.
    n_boot, seed
        Bootstrap of the median.

    Returns
    -------
    dict
        ``{"flagged": TurnaroundSummary, "unflagged": TurnaroundSummary}``.

    Raises
    ------
    ValueError
        Lengths differ, or a negative or non-finite time.
    """
    t = np.asarray(minutes, dtype=np.float64).ravel()
    f = _bools(flagged, "flagged")
    if t.shape != f.shape:
        raise ValueError(f"minutes ({t.size}) and flagged ({f.size}) differ in length")
    if t.size and (not np.all(np.isfinite(t)) or t.min() < 0):
        raise ValueError("turnaround minutes must be finite and >= 0")
    out: dict[str, TurnaroundSummary] = {}
    for name, mask in (("flagged", f), ("unflagged", ~f)):
        g = t[mask]
        if g.size == 0:
            out[name] = TurnaroundSummary(0, Estimate(None), None)
            continue
        ci = bootstrap_intervals(_median_of(g), g.size, n_boot, seed)
        out[name] = TurnaroundSummary(
            int(g.size), Estimate(float(np.median(g)), ci.get("median")), float(np.percentile(g, 90))
        )
    return out
