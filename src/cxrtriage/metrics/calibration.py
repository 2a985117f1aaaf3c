"""Probability calibration: temperature scaling, ECE and Brier score.

* Temperature scaling: C. Guo, G. Pleiss, Y. Sun, K.Q. Weinberger, "On
  Calibration of Modern Neural Networks", ICML 2017. One scalar ``T > 0``
  divides the logits, fitted on validation logits by minimising the negative
  log-likelihood (bounded Brent search over ``log T``, SciPy). It never changes the arg-max class, and for two
  classes it never changes the ranking (AUROC), only the probabilities.
* Expected calibration error with equal-width confidence bins: M.P. Naeini,
  G.F. Cooper, M. Hauskrecht, "Obtaining Well Calibrated Probabilities Using
  Bayesian Binning", AAAI 2015; top-label form with 15 bins as in Guo et al.
* Brier score: G.W. Brier, "Verification of forecasts expressed in terms of
  probability", Monthly Weather Review 78(1), 1950 (multi-class form: sum over
  classes of the squared difference to the one-hot label, mean over images).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "softmax",
    "fit_temperature",
    "expected_calibration_error",
    "brier_score",
    "reliability_bins",
    "calibration_summary",
    "summary_from_probs",
]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``.

    Parameters
    ----------
    logits : float array ``(N, K)``
    temperature : float > 0

    Returns
    -------
    numpy.ndarray
        ``float64 (N, K)``, rows sum to 1.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray, max_iter: int = 200) -> float:
    """Fit the temperature that minimises the validation NLL (Guo et al. 2017).

    Minimises the mean negative log-likelihood of ``softmax(logits / T)`` over
    ``log T`` with SciPy's bounded Brent search (:func:`scipy.optimize.minimize_scalar`)
    on ``T`` in ``[1e-3, 1e3]``. The NLL is convex in ``1 / T``, hence unimodal
    in ``log T``, so the search finds the global minimum.

    Parameters
    ----------
    logits : float array ``(N, K)``
        Validation logits (before softmax), ``K >= 2``.
    y_true : int array ``(N,)``
        Class indices in ``[0, K)``.
    max_iter : int
        Iterations of the search.

    Returns
    -------
    float
        ``T`` in ``[0.05, 20]`` (clipped); ``T > 1`` softens over-confident
        probabilities.

    Raises
    ------
    ValueError
        Empty input or mismatched lengths.
    """
    from scipy.optimize import minimize_scalar  # here, not at import: softmax alone must not load SciPy
    from scipy.special import logsumexp

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if z.ndim != 2 or len(z) == 0 or len(z) != len(y):
        raise ValueError(f"need logits (N, K) and N labels, got {z.shape} and {y.shape}")
    z_true = z[np.arange(len(y)), y]

    def nll(log_t: float) -> float:
        inv_t = float(np.exp(-log_t))
        return float(np.mean(logsumexp(z * inv_t, axis=1) - z_true * inv_t))

    res = minimize_scalar(
        nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded", options={"xatol": 1e-10, "maxiter": max_iter}
    )
    t = float(np.exp(res.x))
    if not np.isfinite(t):
        t = 1.0
    return float(np.clip(t, 0.05, 20.0))


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> dict:
    """Top-label reliability statistics in equal-width confidence bins.

    Parameters
    ----------
    probs : float array ``(N, K)``
        Class probabilities.
    y_true : int array ``(N,)``
    n_bins : int
        Bins of width ``1 / n_bins`` on the confidence ``max_k p_k``; a
        confidence equal to a bin's upper edge falls in that bin.

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), ``count``, ``confidence`` (mean confidence),
        ``accuracy`` (share correct; ``None`` for empty bins), each a list of
        length ``n_bins``.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true).astype(int)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count, mean_conf, acc = [], [], []
    for b in range(n_bins):
        m = which == b
        count.append(int(m.sum()))
        mean_conf.append(float(conf[m].mean()) if m.any() else None)
        acc.append(float(correct[m].mean()) if m.any() else None)
    return {"edges": edges.tolist(), "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error, ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|`` (Naeini et al. 2015).

    Parameters
    ----------
    probs : float array ``(N, K)``
    y_true : int array ``(N,)``
    n_bins : int
        Equal-width confidence bins (15 as in Guo et al. 2017).

    Returns
    -------
    float
        In ``[0, 1]``; 0 = perfectly calibrated on these data.

    Raises
    ------
    ValueError
        Empty input.
    """
    if len(y_true) == 0:
        raise ValueError("ECE of an empty set is undefined")
    r = reliability_bins(probs, y_true, n_bins)
    n = float(sum(r["count"]))
    return float(sum(c / n * abs(a - f) for c, a, f in zip(r["count"], r["accuracy"], r["confidence"]) if c))


def brier_score(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Multi-class Brier score, ``mean_i sum_k (p_ik - [y_i = k])^2`` (Brier 1950).

    Parameters
    ----------
    probs : float array ``(N, K)``
    y_true : int array ``(N,)``

    Returns
    -------
    float
        In ``[0, 2]``; lower is better. For two classes it is twice the
        binary Brier score of the positive class.
    """
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.eye(p.shape[1])[np.asarray(y_true).astype(int)]
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def calibration_summary(logits: np.ndarray, y_true: np.ndarray, temperature: float, n_bins: int = 15) -> dict:
    """ECE, Brier and NLL of ``logits`` before (``T = 1``) and after dividing by ``temperature``.

    Returns
    -------
    dict
        ``{"temperature", "n", "n_bins", "before": {...}, "after": {...}}`` with
        ``ece``, ``brier``, ``nll`` and ``bins`` (:func:`reliability_bins`) each.
    """
    return summary_from_probs(softmax(logits), softmax(logits, temperature), y_true, temperature, n_bins)


def summary_from_probs(
    probs_before: np.ndarray, probs_after: np.ndarray, y_true: np.ndarray, temperature: float | str, n_bins: int = 15
) -> dict:
    """Like :func:`calibration_summary`, from probabilities before / after calibration.

    Used for pooled out-of-fold predictions, where each fold has its own
    temperature (``temperature`` is then only a label, e.g. ``"per fold"``).

    Parameters
    ----------
    probs_before, probs_after : float arrays ``(N, K)``
    y_true : int array ``(N,)``
    temperature : float or str
    n_bins : int

    Returns
    -------
    dict
        As :func:`calibration_summary`.
    """
    y = np.asarray(y_true).astype(int)
    out: dict[str, Any] = {"temperature": temperature, "n": int(len(y)), "n_bins": n_bins}
    for name, p in (
        ("before", np.asarray(probs_before, dtype=np.float64)),
        ("after", np.asarray(probs_after, dtype=np.float64)),
    ):
        out[name] = {
            "ece": expected_calibration_error(p, y, n_bins),
            "brier": brier_score(p, y),
            "nll": float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean()),
            "bins": reliability_bins(p, y, n_bins),
        }
    return out
