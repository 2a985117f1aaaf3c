"""Percentile-bootstrap confidence intervals for a whole set of metrics at once.

Images are resampled with replacement and every metric is recomputed on each
replicate (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
percentile method). Replicates in which a metric is undefined (e.g. no
positive image) are left out for that metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cxrtriage.metrics.report import Estimate, format_estimate

__all__ = ["bootstrap_intervals", "format_ci"]


def bootstrap_intervals(
    statistic: Callable[[np.ndarray], dict[str, float | None]],
    n: int,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float] | None]:
    """Percentile-bootstrap intervals of every value a statistic returns.

    Parameters
    ----------
    statistic : callable
        Maps an ``int64 (n,)`` array of row indices (a resample of ``0..n-1``)
        to ``{name: float or None}``; ``None`` marks an undefined value.
    n : int
        Number of images (rows) resampled.
    n_boot : int
        Replicates (>= 0; 0 gives no intervals).
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same intervals.
    alpha : float
        In (0, 1); 0.05 gives 95 % intervals.

    Returns
    -------
    dict str -> (low, high) or None
        The ``alpha / 2`` and ``1 - alpha / 2`` percentiles per name; ``None``
        when the value was undefined in every replicate (or ``n_boot`` is 0).

    Raises
    ------
    ValueError
        ``n_boot < 0`` or ``alpha`` outside (0, 1).
    """
    if n_boot < 0 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n_boot >= 0 and 0 < alpha < 1, got {n_boot} and {alpha}")
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {}
    names: list[str] = []
    for _ in range(n_boot):
        values = statistic(rng.integers(0, n, n))
        for key, v in values.items():
            if key not in reps:
                reps[key] = []
                names.append(key)
            if v is not None:
                reps[key].append(v)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out: dict[str, tuple[float, float] | None] = {}
    for key in names:
        if reps[key]:
            lo, hi = np.percentile(reps[key], q)
            out[key] = (float(lo), float(hi))
        else:
            out[key] = None
    return out


def format_ci(m: dict | None) -> str:
    """A ``{"value", "ci95"}`` dict (:meth:`cxrtriage.metrics.report.Estimate.to_dict`) as ``0.912 (0.880–0.940)``.

    ``–`` when missing or undefined; see :func:`cxrtriage.metrics.report.format_estimate`.
    """
    return format_estimate(Estimate.from_dict(m) if m else None)
