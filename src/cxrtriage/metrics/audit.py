"""Pure statistics of the shortcut audit (``cxr audit``): source probe, heatmap mass, bootstrap means.

A model that separates its classes by where an image came from rather than by
what it shows (DeGrave, Janizek & Lee, "AI for radiographic COVID-19 detection
selects shortcuts over signal", Nat. Mach. Intell. 3, 2021; Zech et al.,
"Variable generalization performance of a deep learning model to detect
pneumonia in chest radiographs", PLoS Med. 15(11), 2018) leaves traces that can
be measured without any knowledge of the disease:

* :func:`source_probe`: how well a linear probe on the model's pooled features
  predicts the dataset of origin (cross-validated, grouped by patient);
* :func:`mass_in_mask`: the share of a heatmap's mass inside the lung fields;
* :func:`mean_estimate`: a mean with its percentile-bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cxrtriage.metrics.intervals import bootstrap_intervals
from cxrtriage.metrics.report import Estimate

__all__ = ["SourceProbe", "mass_in_mask", "mean_estimate", "source_probe"]


def mean_estimate(values: Sequence[float] | np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """Mean of finite values with its 95 % percentile-bootstrap interval.

    Parameters
    ----------
    values : float array-like ``(N,)``
        NaN entries (undefined per-item values) are dropped first.
    n_boot : int
        Bootstrap replicates (0: no interval).
    seed : int
        Bootstrap seed.

    Returns
    -------
    Estimate
        ``value`` ``None`` when no finite value is left.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Estimate(None)
    ci = bootstrap_intervals(lambda idx: {"mean": float(v[idx].mean())}, v.size, n_boot=n_boot, seed=seed)
    return Estimate(float(v.mean()), ci.get("mean") if n_boot else None)


def mass_in_mask(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of a non-negative heatmap's mass that falls inside a mask.

    Parameters
    ----------
    heat : numpy.ndarray
        ``float (H, W)``, e.g. a ReLU'd class activation map upsampled to the image.
        Negative values are clipped to 0.
    mask : numpy.ndarray
        ``bool (H, W)``.

    Returns
    -------
    float
        ``sum(heat[mask]) / sum(heat)`` in [0, 1]; NaN when the map has no mass.
        A map spread evenly over the image gives ``mask.mean()`` (the chance level).

    Raises
    ------
    ValueError
        Shapes differ.
    """
    h = np.maximum(np.asarray(heat, dtype=np.float64), 0.0)
    m = np.asarray(mask, dtype=bool)
    if h.shape != m.shape:
        raise ValueError(f"heatmap {h.shape} and mask {m.shape} differ in shape")
    total = float(h.sum())
    return float(h[m].sum() / total) if total > 0 else float("nan")


@dataclass
class SourceProbe:
    """Out-of-fold result of :func:`source_probe`.

    Attributes
    ----------
    auroc : Estimate
        Out-of-fold AUROC of predicting the source (binary: of ``sources[1]``;
        more sources: one-vs-rest macro), with a 95 % bootstrap interval over images.
    sources : list of str
        Source names, in probability-column order.
    counts : dict str -> int
        Images per source.
    n_splits : int
        Folds of the grouped cross-validation.
    accuracy : float
        Out-of-fold accuracy of the arg-max source.
    oof_probs : numpy.ndarray
        ``float64 (N, S)`` out-of-fold source probabilities (not serialised).
    """

    auroc: Estimate
    sources: list[str]
    counts: dict[str, int]
    n_splits: int
    accuracy: float
    oof_probs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict`` (without the per-image probabilities)."""
        return {
            "auroc": self.auroc.to_dict(),
            "sources": list(self.sources),
            "counts": dict(self.counts),
            "n_splits": self.n_splits,
            "accuracy": self.accuracy,
        }


def _source_auroc(y: np.ndarray, p: np.ndarray, k: int) -> float | None:
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if len(present) < 2:
        return None
    if k == 2:
        return float(roc_auc_score(y, p[:, 1]))
    aucs = [float(roc_auc_score(y == c, p[:, c])) for c in present]
    return float(np.mean(aucs))


def source_probe(
    features: np.ndarray,
    sources: Sequence[str],
    groups: Sequence[str],
    n_splits: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    C: float = 1.0,
) -> SourceProbe:
    """Predict each image's source from features: grouped cross-validated logistic regression.

    A standardised (z-scored within each training fold) L2 logistic regression
    (scikit-learn ``LogisticRegression``, ``C`` inverse regularisation) is fitted on
    the training folds of a ``StratifiedGroupKFold`` (stratified by source, no
    group in two folds) and scores the held-out fold. The AUROC of the pooled
    out-of-fold probabilities measures how much the features encode the source:
    0.5 = not at all, 1.0 = perfectly. Its interval resamples images and keeps the
    fitted folds fixed, so it omits the variability of the fit.

    Parameters
    ----------
    features : float array ``(N, D)``
        E.g. pooled CNN features (:meth:`cxrtriage.inference.backend.Backend.run`, ``features="pooled"``).
    sources : sequence of N str
        Dataset (or site) of origin per image; at least two distinct values.
    groups : sequence of N str
        Patient (or other) groups kept within one fold.
    n_splits : int
        Folds (>= 2); lowered to the number of groups of the smallest source when that is smaller.
    n_boot : int
        Bootstrap replicates for the interval (0: none).
    seed : int
        Seed of the fold assignment and the bootstrap.
    C : float
        Inverse L2 regularisation strength (> 0).

    Returns
    -------
    SourceProbe

    Raises
    ------
    ValueError
        Shapes disagree, fewer than two sources, or a source has fewer than two groups.
    """
    x = np.asarray(features, dtype=np.float64)
    src = np.asarray([str(s) for s in sources])
    grp = np.asarray([str(g) for g in groups])
    if x.ndim != 2 or len(x) != len(src) or len(grp) != len(src):
        raise ValueError(f"features (N, D) with N sources and groups expected, got {x.shape}, {len(src)}, {len(grp)}")
    names = sorted(set(src.tolist()))
    if len(names) < 2:
        raise ValueError(f"source probe needs images from at least two sources, got {names}")
    y = np.array([names.index(s) for s in src])
    groups_per_source = {s: len(set(grp[src == s].tolist())) for s in names}
    smallest = min(groups_per_source.values())
    if smallest < 2:
        raise ValueError(f"source probe needs >= 2 patients per source for cross-validation, got {groups_per_source}")
    k = min(n_splits, smallest)
    if k < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    # scikit-learn here, not at import: the server imports mass_in_mask from this module
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    oof = np.zeros((len(y), len(names)), np.float64)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, grp):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.fit(x[train], y[train])
        proba = model.predict_proba(x[test])
        oof[np.ix_(test, model[-1].classes_)] = proba
    point = _source_auroc(y, oof, len(names))
    ci = (
        bootstrap_intervals(lambda idx: {"auroc": _source_auroc(y[idx], oof[idx], len(names))}, len(y), n_boot, seed)
        if n_boot
        else {}
    )
    return SourceProbe(
        auroc=Estimate(point, ci.get("auroc") if point is not None else None),
        sources=names,
        counts={s: int((src == s).sum()) for s in names},
        n_splits=k,
        accuracy=float((oof.argmax(1) == y).mean()),
        oof_probs=oof,
    )
