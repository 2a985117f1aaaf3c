"""Classification metrics on arrays, as one :class:`MetricReport`.

Per class ``c`` (one-vs-rest counts from the confusion matrix): sensitivity = TP / (TP + FN) (recall),
specificity = TN / (TN + FP), PPV = TP / (TP + FP), NPV = TN / (TN + FN), F1 = 2 TP / (2 TP + FP + FN),
and the AUROC of ``probs[:, c]`` for ``y == c``. Headline names and their binary / multi-class meaning:
:mod:`cxrtriage.metrics.report`.

The counts come from one ``numpy.bincount`` and the AUROC from the Mann-Whitney identity on mid-ranks
(:func:`scipy.stats.rankdata`; Hanley & McNeil, Radiology 1982): AUROC = (R+ - n+ (n+ + 1) / 2) / (n+ n-),
R+ the rank sum of the positives, ties counted half, which is the trapezoidal area under the empirical ROC
curve. Both equal scikit-learn's ``multilabel_confusion_matrix``, ``accuracy_score``,
``balanced_accuracy_score`` and ``roc_auc_score`` (``tests/test_metric_report.py`` checks them against it on
random scores with ties and absent classes); they are computed here because the bootstrap recomputes every
metric 1,000 times, where scikit-learn's input checks took about 10 ms per replicate (10 s per report).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from cxrtriage.config import ModelConfig
from cxrtriage.metrics.decision import decide, decide_indices
from cxrtriage.metrics.intervals import bootstrap_intervals
from cxrtriage.metrics.report import METRIC_NAMES, PER_CLASS_NAMES, Estimate, MetricReport, safe_div

__all__ = ["auroc", "metric_report", "report_at_operating_point", "safe_div"]

_SEP = "\x1f"  # joins class and metric name in the flat bootstrap statistic


def _auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    """AUROC of ``score`` for boolean ``truth`` (Mann-Whitney, mid-ranks); ``None`` unless both outcomes occur."""
    n_pos = int(truth.sum())
    n_neg = len(truth) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # average ranks of tied scores
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Area under the ROC curve of class probabilities.

    Parameters
    ----------
    y_true : int array ``(N,)``
        Class indices in ``[0, K)``.
    probs : float array ``(N, K)``
        Class probabilities. For K = 2 the AUROC of class 1; for K > 2 the mean
        one-vs-rest AUROC over the classes present in ``y_true``.

    Returns
    -------
    float or None
        In [0, 1]; ``None`` if fewer than two classes are present (undefined).
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[1] == 2:
        return _auc(y == 1, p[:, 1])
    per = [_auc(y == c, p[:, c]) for c in np.unique(y)]
    vals = [a for a in per if a is not None]
    return float(np.mean(vals)) if vals else None


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """``int64 (K, K)`` confusion matrix (rows: truth, columns: call) of class indices in ``[0, K)``."""
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _point(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, k: int, positive: int | None
) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """Headline metrics and per-class metrics (list indexed by class) on one sample."""
    labels = list(range(k))
    n = len(y)
    cm = _confusion(y, pred, k)
    per: list[dict[str, float | None]] = []
    for c in labels:
        tp = int(cm[c, c])
        fn, fp = int(cm[c].sum()) - tp, int(cm[:, c].sum()) - tp
        tn = n - tp - fn - fp
        per.append(
            {
                "sensitivity": safe_div(tp, tp + fn),
                "specificity": safe_div(tn, tn + fp),
                "ppv": safe_div(tp, tp + fp),
                "npv": safe_div(tn, tn + fn),
                "f1": safe_div(2 * tp, 2 * tp + fp + fn),
                "auroc": _auc(y == c, probs[:, c]),
            }
        )
    present = [int(c) for c in np.unique(y)]
    head: dict[str, float | None] = {
        "accuracy": float(np.trace(cm)) / n if n else None,
        # balanced accuracy = mean recall over the classes present in y (absent ones are dropped)
        "macro_sensitivity": float(np.mean([cm[c, c] / cm[c].sum() for c in present])) if n else None,
    }
    if positive is not None:
        head["auroc"] = per[positive]["auroc"]
        for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            head[name] = per[positive][name]
    else:
        head["auroc"] = _mean([per[c]["auroc"] for c in present]) if len(present) > 1 else None
        for name in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            head[name] = _mean([per[c][name] for c in present])
    return {name: head[name] for name in METRIC_NAMES}, per


def metric_report(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    task: str,
    positive_class: str | None = None,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> MetricReport:
    """Score class probabilities against the truth: one :class:`MetricReport`.

    The call per image is :func:`cxrtriage.metrics.decision.decide_indices`:
    for two classes with ``threshold``, ``positive_class`` when its probability is
    at or above it; otherwise the arg-max. Macro averages run over the classes
    present in ``y_true`` only (named in ``macro_over``), so a subset holding 2 of
    a model's 3 classes gets its true 2-class macro sensitivity.

    Parameters
    ----------
    y_true : int array-like ``(N,)``
        True class indices in ``[0, K)``.
    probs : float array ``(N, K)``
        Class probabilities in [0, 1] (rows sum to 1), columns in ``classes`` order.
    classes : sequence of K str
        All classes of the task.
    task : str
        Task name, recorded in the report.
    positive_class : str, optional
        Two-class tasks: the class whose sensitivity/specificity/PPV/NPV/F1/AUROC
        are the headline (default ``classes[1]``). Ignored for K > 2.
    threshold : float, optional
        Two-class tasks: operating point on ``positive_class``'s probability;
        ``None`` means arg-max.
    n_boot : int
        Percentile-bootstrap replicates for the 95 % intervals (0: none), see
        :func:`cxrtriage.metrics.intervals.bootstrap_intervals`.
    seed : int
        Bootstrap seed.
    y_pred : int array-like ``(N,)``, optional
        Calls made elsewhere, e.g. pooled out-of-fold calls under per-fold
        thresholds (then leave ``threshold`` ``None``); default: the decision rule above.

    Returns
    -------
    MetricReport
        Headline metrics (:data:`cxrtriage.metrics.report.METRIC_NAMES`) and
        per-class metrics with intervals, ``(K, K)`` confusion matrix (rows true).

    Raises
    ------
    ValueError
        Shapes disagree, ``probs`` is not ``(N, K)``, a label lies outside
        ``[0, K)`` (in ``y_true`` or ``y_pred``), or ``positive_class`` is not a class.
    """
    classes = list(classes)
    k = len(classes)
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must be (N, K) = ({len(y)}, {k}), got {p.shape}")
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got {y.min()}..{y.max()}")
    positive: int | None = None
    if k == 2:
        positive_class = positive_class or classes[1]
        if positive_class not in classes:
            raise ValueError(f"positive class {positive_class!r} not in {classes}")
        positive = classes.index(positive_class)
    else:
        positive_class, threshold = None, None
    pred = decide_indices(p, positive, threshold) if y_pred is None else np.asarray(y_pred).astype(np.int64).ravel()
    if len(pred) != len(y):
        raise ValueError(f"y_pred has {len(pred)} calls for {len(y)} images")
    if len(pred) and (pred.min() < 0 or pred.max() >= k):
        raise ValueError(f"calls (y_pred) must lie in [0, {k}), got {pred.min()}..{pred.max()}")
    head, per = _point(y, p, pred, k, positive)

    def statistic(idx: np.ndarray) -> dict[str, float | None]:
        h, pc = _point(y[idx], p[idx], pred[idx], k, positive)
        flat = dict(h)
        for c, m in enumerate(pc):
            flat.update({f"{c}{_SEP}{name}": v for name, v in m.items()})
        return flat

    ci = bootstrap_intervals(statistic, len(y), n_boot=n_boot, seed=seed) if n_boot and len(y) else {}
    present = [classes[c] for c in np.unique(y)]
    return MetricReport(
        task=task,
        classes=classes,
        n=int(len(y)),
        class_counts={c: int((y == i).sum()) for i, c in enumerate(classes)},
        macro_over=present,
        metrics={name: Estimate(head[name], ci.get(name) if head[name] is not None else None) for name in METRIC_NAMES},
        per_class={
            classes[c]: {
                name: Estimate(per[c][name], ci.get(f"{c}{_SEP}{name}") if per[c][name] is not None else None)
                for name in PER_CLASS_NAMES
            }
            for c in range(k)
        },
        confusion_matrix=_confusion(y, pred, k).tolist(),
        positive_class=positive_class,
        threshold=None if threshold is None else float(threshold),
        n_boot=int(n_boot),
    )


def report_at_operating_point(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    config: ModelConfig,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    y_pred: Sequence[int] | np.ndarray | None = None,
) -> MetricReport:
    """:func:`metric_report` at a model's saved operating point.

    Binary models (two classes, ``positive_class`` among them) are scored at
    ``config.threshold`` on ``config.positive_class``; other models by arg-max.

    Parameters
    ----------
    y_true : int array-like ``(N,)``
        True class indices in ``[0, K)``, ``K = len(config.classes)``.
    probs : float array ``(N, K)``
        Class probabilities after the model's temperature, columns in ``config.classes`` order.
    config : ModelConfig
        The model's classes, task, positive class and threshold.
    n_boot, seed
        As in :func:`metric_report`.
    y_pred : int array-like ``(N,)``, optional
        The calls, when already made; default :func:`cxrtriage.metrics.decision.decide`.

    Returns
    -------
    MetricReport
    """
    binary = len(config.classes) == 2 and config.positive_class in config.classes
    return metric_report(
        y_true,
        probs,
        list(config.classes),
        task=config.task,
        positive_class=config.positive_class if binary else None,
        threshold=config.threshold if binary else None,
        n_boot=n_boot,
        seed=seed,
        y_pred=decide(probs, config) if y_pred is None else y_pred,
    )
