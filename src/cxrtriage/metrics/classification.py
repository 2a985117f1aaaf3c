"""Classification metrics on arrays (scikit-learn underneath).

Binary metrics follow the usual diagnostic-accuracy definitions:
sensitivity = TP / (TP + FN) (recall of the positive class), specificity =
TN / (TN + FP), PPV = TP / (TP + FP), NPV = TN / (TN + FN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["binary_metrics", "multiclass_metrics", "auroc", "bootstrap_ci", "safe_div"]


def safe_div(num: float, den: float) -> float | None:
    """``num / den`` as float, or ``None`` when ``den`` is 0 (undefined metric)."""
    return float(num) / float(den) if den else None


def auroc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Area under the ROC curve.

    Parameters
    ----------
    y_true : int array ``(N,)``
        Class indices.
    probs : float array ``(N, K)``
        Class probabilities (rows sum to 1). For K = 2 the AUROC of class 1;
        for K > 2 the macro one-vs-rest AUROC.

    Returns
    -------
    float or None
        ``None`` if only one class is present (AUROC undefined).
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if k == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    per = [roc_auc_score(y_true == c, probs[:, c]) for c in range(k) if c in present]
    return float(np.mean(per))


def binary_metrics(y_true: Sequence[int], p_pos: Sequence[float], threshold: float, positive: int = 1) -> dict:
    """Metrics of a binary classifier at one threshold.

    Parameters
    ----------
    y_true : sequence of int, length N
        0/1 class indices.
    p_pos : sequence of float in [0, 1], length N
        Probability of the class ``positive``.
    threshold : float
        Called positive when ``p_pos >= threshold``.
    positive : int
        Index of the positive class (0 or 1).

    Returns
    -------
    dict
        ``n, threshold, accuracy, sensitivity, specificity, ppv, npv, f1, auroc,
        tp, fp, tn, fn, confusion_matrix`` (2x2 list, rows = true class in
        index order, columns = predicted). Undefined ratios are ``None``.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_pos, dtype=np.float64)
    truth = y == positive
    pred = p >= threshold
    pred_idx = np.where(pred, positive, 1 - positive)
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    tn = int(np.sum(~truth & ~pred))
    fn = int(np.sum(truth & ~pred))
    auc = float(roc_auc_score(truth, p)) if 0 < truth.sum() < len(truth) else None
    return {
        "n": int(len(y)),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred_idx)),
        "sensitivity": safe_div(tp, tp + fn),
        "specificity": safe_div(tn, tn + fp),
        "ppv": safe_div(tp, tp + fp),
        "npv": safe_div(tn, tn + fn),
        "f1": float(f1_score(truth, pred, zero_division=0)),
        "auroc": auc,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "confusion_matrix": confusion_matrix(y, pred_idx, labels=[0, 1]).tolist(),
    }


def multiclass_metrics(
    y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str], y_pred: Sequence[int] | None = None
) -> dict:
    """Per-class and averaged metrics of a K-class classifier.

    Parameters
    ----------
    y_true : sequence of int, length N
    probs : float array ``(N, K)``
    classes : sequence of K class names
    y_pred : sequence of int, optional
        Predicted classes; default ``argmax(probs)``.

    Returns
    -------
    dict
        ``n, accuracy, per_class`` ({class: sensitivity, specificity, ppv, npv,
        f1, auroc, support}), ``macro`` and ``weighted`` averages of
        sensitivity/ppv/f1, ``macro_auroc`` (one-vs-rest) and the KxK
        ``confusion_matrix`` (rows = true class).
    """
    y = np.asarray(y_true).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    pred = np.asarray(y_pred).astype(int) if y_pred is not None else probs.argmax(1)
    cm = confusion_matrix(y, pred, labels=list(range(k)))
    per_class = {}
    for c, name in enumerate(classes):
        tp = cm[c, c]
        fn = cm[c].sum() - tp
        fp = cm[:, c].sum() - tp
        tn = cm.sum() - tp - fn - fp
        truth = y == c
        per_class[name] = {
            "sensitivity": safe_div(tp, tp + fn),
            "specificity": safe_div(tn, tn + fp),
            "ppv": safe_div(tp, tp + fp),
            "npv": safe_div(tn, tn + fn),
            "f1": safe_div(2 * tp, 2 * tp + fp + fn),
            "auroc": float(roc_auc_score(truth, probs[:, c])) if 0 < truth.sum() < len(y) else None,
            "support": int(truth.sum()),
        }
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    support = cm.sum(1)
    w = support / max(1, support.sum())
    aucs = [v["auroc"] for v in per_class.values() if v["auroc"] is not None]
    return {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "per_class": per_class,
        "macro": {"sensitivity": float(rec.mean()), "ppv": float(prec.mean()), "f1": float(f1.mean())},
        "weighted": {"sensitivity": float(rec @ w), "ppv": float(prec @ w), "f1": float(f1 @ w)},
        "macro_auroc": float(np.mean(aucs)) if aucs else None,
        "confusion_matrix": cm.tolist(),
    }


def bootstrap_ci(
    y_true: Sequence[int],
    probs: np.ndarray,
    y_pred: Sequence[int],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Percentile bootstrap confidence intervals for accuracy and AUROC.

    Resamples images with replacement (Efron & Tibshirani, "An Introduction
    to the Bootstrap", 1993, percentile method).

    Parameters
    ----------
    y_true : sequence of int, length N
    probs : float array ``(N, K)``
        Class probabilities (AUROC as in :func:`auroc`).
    y_pred : sequence of int, length N
        Predicted classes at the operating point (for accuracy).
    n_boot : int
        Bootstrap replicates.
    seed : int
    alpha : float
        1 - confidence level (0.05 gives 95 % intervals).

    Returns
    -------
    dict
        ``{"accuracy": [lo, hi], "auroc": [lo, hi] or None, "n_boot": n_boot}``.
    """
    y = np.asarray(y_true).astype(int)
    pred = np.asarray(y_pred).astype(int)
    probs = np.asarray(probs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    accs, aucs = [], []
    n = len(y)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        accs.append(float(np.mean(y[idx] == pred[idx])))
        a = auroc(y[idx], probs[idx])
        if a is not None:
            aucs.append(a)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    return {
        "accuracy": [float(v) for v in np.percentile(accs, q)],
        "auroc": [float(v) for v in np.percentile(aucs, q)] if aucs else None,
        "n_boot": n_boot,
    }
