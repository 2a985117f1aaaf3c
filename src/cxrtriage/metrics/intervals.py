"""Percentile-bootstrap confidence intervals for a whole set of metrics at once.

Images are resampled with replacement and every metric is recomputed on
each replicate (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993, percentile method). Replicates in which a metric is undefined (e.g.
no positive image) are left out for that metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["point_metrics", "bootstrap_intervals", "format_ci"]


def _auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else None


def point_metrics(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, classes: Sequence[str], positive: int | None
) -> dict:
    """Flat ``dict`` of headline metrics.

    Parameters
    ----------
    y : int array ``(N,)``
        True class indices.
    probs : float array ``(N, K)``
    pred : int array ``(N,)``
        Predicted classes at the operating point.
    classes : sequence of K str
    positive : int or None
        Binary tasks: index of the positive class; ``None`` for multi-class.

    Returns
    -------
    dict str -> float or None
        Binary: ``auroc, sensitivity, specificity, ppv, npv, f1, accuracy``.
        Multi-class: ``accuracy, macro_auroc, macro_sensitivity, macro_ppv,
        macro_f1, weighted_f1`` and per class ``sensitivity_<c>``,
        ``specificity_<c>``, ``ppv_<c>``, ``f1_<c>``, ``auroc_<c>`` (one-vs-rest).
    """
    y = np.asarray(y).astype(int)
    pred = np.asarray(pred).astype(int)
    k = len(classes)
    out: dict = {}
    per = {}
    for c in range(k):
        t, p = y == c, pred == c
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        tn = len(y) - tp - fp - fn
        per[c] = {
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "ppv": tp / (tp + fp) if tp + fp else None,
            "npv": tn / (tn + fn) if tn + fn else None,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "auroc": _auc(t, probs[:, c]),
            "support": int(t.sum()),
        }
    out["accuracy"] = float((y == pred).mean()) if len(y) else None
    if positive is not None and k == 2:
        m = per[positive]
        out.update(
            {
                "auroc": m["auroc"],
                "sensitivity": m["sensitivity"],
                "specificity": m["specificity"],
                "ppv": m["ppv"],
                "npv": m["npv"],
                "f1": m["f1"],
            }
        )
        return out

    def mean(key, weighted=False):
        vals = [(per[c][key], per[c]["support"]) for c in range(k) if per[c][key] is not None]
        if not vals:
            return None
        if weighted:
            w = sum(s for _, s in vals)
            return float(sum(v * s for v, s in vals) / w) if w else None
        return float(np.mean([v for v, _ in vals]))

    out.update(
        {
            "macro_auroc": mean("auroc"),
            "macro_sensitivity": mean("sensitivity"),
            "macro_ppv": mean("ppv"),
            "macro_f1": mean("f1"),
            "weighted_f1": mean("f1", weighted=True),
        }
    )
    for c, name in enumerate(classes):
        for key in ("sensitivity", "specificity", "ppv", "f1", "auroc"):
            out[f"{key}_{name}"] = per[c][key]
    return out


def bootstrap_intervals(
    y: np.ndarray,
    probs: np.ndarray,
    pred: np.ndarray,
    classes: Sequence[str],
    positive: int | None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Point estimates and percentile-bootstrap intervals of :func:`point_metrics`.

    Parameters
    ----------
    y, probs, pred, classes, positive
        As in :func:`point_metrics`.
    n_boot : int
        Replicates (>= 1).
    seed : int
    alpha : float
        0.05 gives 95 % intervals.

    Returns
    -------
    dict str -> {"value": float or None, "ci95": [low, high] or None}
        Plus ``"n_boot"``.
    """
    y = np.asarray(y).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    pred = np.asarray(pred).astype(int)
    point = point_metrics(y, probs, pred, classes, positive)
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {k: [] for k in point}
    n = len(y)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        m = point_metrics(y[idx], probs[idx], pred[idx], classes, positive)
        for key, v in m.items():
            if v is not None:
                reps[key].append(v)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    out = {
        key: {"value": point[key], "ci95": [float(v) for v in np.percentile(reps[key], q)] if reps[key] else None}
        for key in point
    }
    out["n_boot"] = n_boot
    return out


def format_ci(m: dict | None) -> str:
    """``{"value", "ci95"}`` as ``0.912 (0.880–0.940)``; ``–`` when missing."""
    if not m or m.get("value") is None:
        return "–"
    ci = m.get("ci95")
    return f"{m['value']:.3f} ({ci[0]:.3f}–{ci[1]:.3f})" if ci else f"{m['value']:.3f}"
