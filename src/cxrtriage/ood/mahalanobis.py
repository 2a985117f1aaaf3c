"""Mahalanobis-distance out-of-distribution detector on pooled CNN features.

Method: Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018. Class
means of the penultimate (globally pooled) features and one covariance shared
by the classes are estimated on the training set; the score of an input is its
smallest squared Mahalanobis distance to a class mean. The covariance is the
Ledoit-Wolf shrinkage estimate (Ledoit & Wolf, "A well-conditioned estimator
for large-dimensional covariance matrices", J. Multivariate Analysis 88, 2004)
of the class-centred features, which stays invertible with 1280-dimensional
features and a few thousand images. The rejection threshold is a high
percentile of the scores of held-out (validation) in-distribution images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrtriage.models.bundle import BUNDLE_JSON, CONFIG_JSON, ModelBundle, OODSection

__all__ = ["MahalanobisDetector", "OOD_NPZ", "OOD_METHOD", "pooled_features"]

#: File of a fitted detector's statistics inside a model folder (threshold and info: the bundle's ``ood`` section).
OOD_NPZ = "ood.npz"
OOD_METHOD = "Mahalanobis distance, Lee et al. NeurIPS 2018; Ledoit-Wolf covariance"


def pooled_features(feature_map: np.ndarray) -> np.ndarray:
    """Global average pooling of a feature map.

    Parameters
    ----------
    feature_map : numpy.ndarray
        ``float (N, C, h, w)``.

    Returns
    -------
    numpy.ndarray
        ``float32 (N, C)``: the input of the linear classifier for GAP-head models.
    """
    return np.asarray(feature_map, dtype=np.float32).mean(axis=(2, 3))


@dataclass
class MahalanobisDetector:
    """Class-conditional Gaussian model of pooled features with a shared covariance.

    Attributes
    ----------
    means : numpy.ndarray
        ``float64 (K, C)`` class means.
    precision : numpy.ndarray
        ``float64 (C, C)`` inverse of the shared (shrunk) covariance.
    threshold : float
        Inputs with :meth:`score` above this are out of distribution
        (squared Mahalanobis distance, dimensionless).
    info : dict
        Fit details and measured rates (saved in the bundle's ``ood`` section).
    columns : int or None
        Use only the first ``columns`` features of every input (``C`` of :attr:`means`): for a seed ensemble,
        whose pooled features are its members' side by side, the detector models the first member's, which
        keeps ``ood.npz`` at one member's size. ``None``: all features.
    """

    means: np.ndarray
    precision: np.ndarray
    threshold: float = float("inf")
    info: dict = field(default_factory=dict)
    columns: int | None = None

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> MahalanobisDetector:
        """Estimate class means and the Ledoit-Wolf shared covariance.

        Parameters
        ----------
        features : numpy.ndarray
            ``float (N, C)`` pooled features of training images.
        labels : numpy.ndarray
            ``int (N,)`` class indices.

        Returns
        -------
        MahalanobisDetector
            With ``threshold = inf`` until :meth:`calibrate` is called.

        Raises
        ------
        ValueError
            Fewer than 2 images, or mismatched shapes.
        """
        from sklearn.covariance import LedoitWolf

        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(labels).astype(np.int64)
        if x.ndim != 2 or len(x) != len(y) or len(x) < 2:
            raise ValueError(f"features (N, C) with N >= 2 and labels (N,) expected, got {x.shape} and {y.shape}")
        classes = np.unique(y)
        means = np.stack([x[y == k].mean(0) for k in classes])
        centred = x - means[np.searchsorted(classes, y)]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        det = cls(means=means, precision=np.asarray(lw.precision_, dtype=np.float64))
        det.info = {
            "n_fit": int(len(x)),
            "dim": int(x.shape[1]),
            "classes_fit": [int(k) for k in classes],
            "shrinkage": float(lw.shrinkage_),
        }
        return det

    def score(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance to a class mean.

        Parameters
        ----------
        features : numpy.ndarray
            ``float (N, C)`` or ``(C,)`` pooled features.

        Returns
        -------
        numpy.ndarray
            ``float64 (N,)``, >= 0; larger = further from the training data.
        """
        x = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if self.columns is not None:
            x = x[:, : self.columns]
        best: np.ndarray | None = None
        for mu in self.means:
            d = x - mu
            s = np.einsum("nc,nc->n", d @ self.precision, d)
            best = s if best is None else np.minimum(best, s)
        if best is None:
            raise ValueError("detector has no class means")
        return best

    def calibrate(self, val_features: np.ndarray, percentile: float = 99.5) -> float:
        """Set :attr:`threshold` to a percentile of held-out in-distribution scores.

        Parameters
        ----------
        val_features : numpy.ndarray
            ``float (N, C)`` pooled features of validation images (not used in :meth:`fit`).
        percentile : float
            0-100; about ``100 - percentile`` % of such images are then rejected.

        Returns
        -------
        float
            The threshold.
        """
        scores = self.score(val_features)
        self.threshold = float(np.percentile(scores, percentile))
        self.info.update({"percentile": float(percentile), "n_val": int(len(scores)), "threshold": self.threshold})
        return self.threshold

    def is_outlier(self, features: np.ndarray) -> np.ndarray:
        """``bool (N,)``: score above the threshold."""
        return self.score(features) > self.threshold

    def save(self, model_dir: str | Path) -> tuple[Path, Path]:
        """Write ``ood.npz`` (means, float32 precision) and the bundle's ``ood`` section (threshold, info).

        Parameters
        ----------
        model_dir : path
            A model bundle folder (:class:`cxrtriage.models.bundle.ModelBundle`).

        Returns
        -------
        (npz_path, bundle_json_path)
        """
        d = Path(model_dir)
        bundle = ModelBundle.load(d)
        npz = d / OOD_NPZ
        tmp = d / f".{OOD_NPZ}.tmp.npz"
        arrays: dict[str, np.ndarray] = {
            "means": self.means.astype(np.float32),
            "precision": self.precision.astype(np.float32),
        }
        if self.columns is not None:
            arrays["columns"] = np.array(self.columns, np.int64)
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(npz)
        stats = {k: v for k, v in dict(self.info, method=OOD_METHOD).items() if k != "threshold"}
        bundle.ood = OODSection(threshold=float(self.threshold), file=OOD_NPZ, stats=stats)
        bundle.save(d)
        return npz, d / BUNDLE_JSON

    @classmethod
    def load(cls, model_dir: str | Path) -> MahalanobisDetector | None:
        """Load a detector saved by :meth:`save`; ``None`` when the folder has none."""
        d = Path(model_dir)
        if not (d / CONFIG_JSON).is_file():
            return None
        section = ModelBundle.load(d).ood
        if section is None or not (d / section.file).is_file():
            return None
        with np.load(d / section.file) as z:
            means, precision = z["means"].astype(np.float64), z["precision"].astype(np.float64)
            columns = int(z["columns"]) if "columns" in z.files else None
        info = dict(section.stats, threshold=section.threshold)
        return cls(means=means, precision=precision, threshold=float(section.threshold), info=info, columns=columns)
