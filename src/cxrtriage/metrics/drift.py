"""Score drift after deployment: today's scores against the validation distribution of the model card.

Two measures of one shift, on scores in [0, 1] (the calibrated probability of a finding):

``psi``
    Population stability index over fixed bins,
    ``PSI = sum_b (p_b - q_b) ln(p_b / q_b)`` with ``q`` the reference (validation) share and
    ``p`` the current share of bin ``b`` (Siddiqi, "Credit Risk Scorecards", Wiley 2006, ch. 8;
    Yurdakul, "Statistical properties of population stability index", 2018). Empty bins get a
    share of ``eps`` so the logarithm stays finite. The usual reading: < 0.1 stable,
    0.1-0.25 moderate shift, > 0.25 major shift (:data:`PSI_LEVELS`).
``ks``
    Two-sample Kolmogorov-Smirnov statistic ``D = max_x |F_cur(x) - F_ref(x)|`` and its p-value
    (:func:`scipy.stats.ks_2samp` when the reference is a sample; from binned CDFs when the reference is
    a histogram, an approximation that is exact at the bin edges).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PSI_LEVELS", "DriftResult", "score_histogram", "psi", "ks_from_histogram", "drift"]

#: PSI alert levels (upper bounds): ``ok`` below 0.1, ``warn`` below 0.25, ``alert`` above.
PSI_LEVELS: tuple[tuple[str, float], ...] = (("ok", 0.1), ("warn", 0.25))

#: Share given to an empty bin in the PSI logarithm.
EPS = 1e-4


def _scores(x: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
        raise ValueError(f"{what}: scores must be finite and in [0, 1]")
    return a


def score_histogram(scores: Sequence[float] | np.ndarray, n_bins: int = 10) -> dict[str, list[float] | list[int]]:
    """Histogram of scores in [0, 1] on ``n_bins`` equal-width bins (the form stored in a model bundle).

    Parameters
    ----------
    scores : float array-like ``(N,)``
        Scores in [0, 1].
    n_bins : int
        Number of bins (>= 2).

    Returns
    -------
    dict
        ``{"edges": (n_bins + 1,) floats from 0 to 1, "counts": (n_bins,) ints}``; the last bin includes 1.

    Raises
    ------
    ValueError
        ``n_bins < 2`` or a score outside [0, 1].
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    a = _scores(scores, "scores")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts, _ = np.histogram(a, bins=edges)
    return {"edges": [round(float(e), 10) for e in edges], "counts": [int(c) for c in counts]}


def psi(reference_counts: Sequence[int] | np.ndarray, current_counts: Sequence[int] | np.ndarray) -> float:
    """Population stability index of two histograms on the same bins.

    Parameters
    ----------
    reference_counts, current_counts : int array-like ``(B,)``
        Counts per bin (validation, current); each must sum to > 0.

    Returns
    -------
    float
        PSI >= 0 (0 = identical shares).

    Raises
    ------
    ValueError
        Different numbers of bins, negative counts or an empty histogram.
    """
    q = np.asarray(reference_counts, dtype=np.float64)
    p = np.asarray(current_counts, dtype=np.float64)
    if q.shape != p.shape or q.ndim != 1:
        raise ValueError(f"histograms must have the same bins, got {q.shape} and {p.shape}")
    if (q < 0).any() or (p < 0).any() or q.sum() <= 0 or p.sum() <= 0:
        raise ValueError("histogram counts must be >= 0 with a positive total")
    q = np.maximum(q / q.sum(), EPS)
    p = np.maximum(p / p.sum(), EPS)
    return float(np.sum((p - q) * np.log(p / q)))


def ks_from_histogram(
    reference_counts: Sequence[int] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
) -> tuple[float, float]:
    """Kolmogorov-Smirnov statistic of current scores against a binned reference distribution.

    Both CDFs are evaluated at the bin edges, so ``D`` is a lower bound of the exact two-sample
    statistic (equal to it when all scores lie on edges). The p-value is the asymptotic two-sample
    Kolmogorov distribution at ``sqrt(n m / (n + m)) D`` (:func:`scipy.stats.kstwobign`).

    Parameters
    ----------
    reference_counts : int array-like ``(B,)``
    current : float array-like ``(N,)``
        Scores in [0, 1].
    edges : float array-like ``(B + 1,)``

    Returns
    -------
    (D, p_value) : (float, float)
        ``D`` in [0, 1]; ``p_value`` in [0, 1] (NaN when a side is empty).
    """
    from scipy.stats import kstwobign

    q = np.asarray(reference_counts, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    a = _scores(current, "current scores")
    if e.shape != (q.size + 1,):
        raise ValueError(f"edges must have {q.size + 1} values, got {e.size}")
    m, n = float(q.sum()), float(a.size)
    if m <= 0 or n <= 0:
        return 0.0, float("nan")
    cdf_ref = np.concatenate([[0.0], np.cumsum(q) / m])
    cdf_cur = np.searchsorted(np.sort(a), e, side="right") / n
    cdf_cur[-1] = 1.0
    d = float(np.max(np.abs(cdf_cur - cdf_ref)))
    return d, float(kstwobign.sf(np.sqrt(n * m / (n + m)) * d))


@dataclass(frozen=True)
class DriftResult:
    """Drift of current scores against a reference histogram.

    Attributes
    ----------
    n_reference, n_current : int
        Scores behind each histogram.
    psi : float or None
        Population stability index (None when there are no current scores).
    ks : float or None
        Kolmogorov-Smirnov ``D`` at the bin edges.
    ks_p : float or None
        Its asymptotic p-value.
    level : {"ok", "warn", "alert", "no_data"}
        From :data:`PSI_LEVELS`; ``no_data`` below ``min_n`` current scores.
    edges : list of float
    reference_share, current_share : list of float
        Shares per bin (each sums to 1; zeros when empty).
    """

    n_reference: int
    n_current: int
    psi: float | None
    ks: float | None
    ks_p: float | None
    level: str
    edges: list[float]
    reference_share: list[float]
    current_share: list[float]


def drift(reference: Mapping[str, Any], current: Sequence[float] | np.ndarray, min_n: int = 20) -> DriftResult:
    """PSI and KS of current scores against a reference histogram from :func:`score_histogram`.

    Parameters
    ----------
    reference : dict
        ``{"edges": (B + 1,), "counts": (B,)}``.
    current : float array-like ``(N,)``
        Current scores in [0, 1].
    min_n : int
        Below this many current scores the level is ``no_data`` (PSI is still reported when N > 0).

    Returns
    -------
    DriftResult

    Raises
    ------
    ValueError
        A malformed reference or scores outside [0, 1].
    """
    edges = np.asarray(reference["edges"], dtype=np.float64)
    ref = np.asarray(reference["counts"], dtype=np.float64)
    if edges.shape != (ref.size + 1,) or ref.size < 2:
        raise ValueError("reference histogram needs B >= 2 counts and B + 1 edges")
    a = _scores(current, "current scores")
    cur, _ = np.histogram(a, bins=edges)
    ref_share = (ref / ref.sum()).tolist() if ref.sum() > 0 else [0.0] * ref.size
    cur_share = (cur / cur.sum()).tolist() if cur.sum() > 0 else [0.0] * ref.size
    if a.size == 0 or ref.sum() <= 0:
        return DriftResult(
            int(ref.sum()), int(a.size), None, None, None, "no_data", edges.tolist(), ref_share, cur_share
        )
    value = psi(ref, cur)
    d, p = ks_from_histogram(ref, a, edges)
    level = "alert"
    for name, bound in PSI_LEVELS:
        if value < bound:
            level = name
            break
    if a.size < min_n:
        level = "no_data"
    return DriftResult(int(ref.sum()), int(a.size), value, d, p, level, edges.tolist(), ref_share, cur_share)
