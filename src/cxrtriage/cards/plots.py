"""Evaluation figures: confusion matrix and ROC curves (matplotlib, scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, roc_auc_score, roc_curve  # noqa: E402

__all__ = ["plot_confusion_matrix", "plot_roc"]


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Write a confusion-matrix PNG (rows = true class, columns = predicted).

    Parameters
    ----------
    cm : KxK int matrix
    classes : K class names
    path : output PNG
    title : str
    """
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 2.5, 1.4 * len(classes) + 2), dpi=110)
    ConfusionMatrixDisplay(np.asarray(cm), display_labels=list(classes)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d"
    )
    ax.set_title(title or "Confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_roc(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    path: str | Path,
    positive: int | None = None,
    operating_point: tuple[float, float] | None = None,
    title: str = "",
) -> Path:
    """Write a ROC-curve PNG.

    Parameters
    ----------
    y_true : int array ``(N,)``
    probs : float array ``(N, K)``
    classes : K class names
    path : output PNG
    positive : int, optional
        Binary tasks: the positive class (one curve). Otherwise one
        one-vs-rest curve per class.
    operating_point : (fpr, tpr), optional
        Marked on the curve (the saved threshold).
    title : str
    """
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    targets = [positive] if positive is not None else range(len(classes))
    for c in targets:
        truth = np.asarray(y_true) == c
        if 0 < truth.sum() < len(truth):
            fpr, tpr, _ = roc_curve(truth, probs[:, c])
            ax.plot(fpr, tpr, label=f"{classes[c]} (AUROC {roc_auc_score(truth, probs[:, c]):.3f})")
    if operating_point is not None:
        ax.plot(*operating_point, "o", color="red", label="operating point")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set_xlabel("1 - specificity (false-positive rate)")
    ax.set_ylabel("sensitivity (true-positive rate)")
    ax.set_title(title or "ROC curve")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
