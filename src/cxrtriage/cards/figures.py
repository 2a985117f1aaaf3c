"""Evaluation figures: ROC curves, metric bars with intervals, reliability diagrams.

All functions write one PNG (matplotlib, Agg backend) and return its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

__all__ = ["roc_figure", "bar_chart", "reliability_diagram"]


def roc_figure(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str = "ROC", dpi: int = 110
) -> Path:
    """One ROC curve per entry.

    Parameters
    ----------
    curves : mapping name -> (y_true, score)
        ``y_true``: 0/1 int array ``(N,)`` (1 = positive); ``score``: float
        array ``(N,)``, higher = more positive. The legend shows the AUROC.
    path : path
        Output PNG.
    title : str

    Returns
    -------
    Path
    """
    fig, ax = plt.subplots(figsize=(5.2, 5), dpi=dpi)
    for name, (y, s) in curves.items():
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def bar_chart(
    names: Sequence[str],
    values: Sequence[float],
    intervals: Sequence[tuple[float, float] | None],
    path: str | Path,
    ylabel: str,
    title: str = "",
    dpi: int = 110,
) -> Path:
    """Bars with error bars (e.g. AUROC with its 95 % bootstrap interval).

    Parameters
    ----------
    names : sequence of str, length M
    values : sequence of float, length M
    intervals : sequence of (low, high) or None, length M
        Drawn as asymmetric error bars; ``None`` draws none.
    path : path
    ylabel, title : str

    Returns
    -------
    Path
    """
    x = np.arange(len(names))
    v = np.asarray(values, dtype=np.float64)
    lo = np.array([v[i] - iv[0] if iv else 0.0 for i, iv in enumerate(intervals)])
    hi = np.array([iv[1] - v[i] if iv else 0.0 for i, iv in enumerate(intervals)])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 1.5), 4), dpi=dpi)
    ax.bar(x, v, color="#4C78A8", yerr=np.vstack([lo, hi]), capsize=4)
    for i, val in enumerate(v):
        ax.text(i, val + hi[i] + 0.005, f"{val:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    finite = v[np.isfinite(v)]
    low = min(0.5, float(np.min(finite - lo[np.isfinite(v)])) - 0.05) if len(finite) else 0.0
    ax.set_ylim(max(0.0, low), 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def reliability_diagram(summary: dict, path: str | Path, title: str = "Reliability", dpi: int = 110) -> Path:
    """Reliability diagram before and after temperature scaling.

    Parameters
    ----------
    summary : dict
        Output of :func:`cxrtriage.metrics.calibration.calibration_summary`.
    path : path
    title : str

    Returns
    -------
    Path
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), dpi=dpi, sharey=True)
    for ax, key in zip(axes, ("before", "after")):
        part = summary[key]
        bins = part["bins"]
        edges = np.asarray(bins["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        width = edges[1] - edges[0]
        acc = np.array([a if a is not None else np.nan for a in bins["accuracy"]])
        conf = np.array([c if c is not None else np.nan for c in bins["confidence"]])
        full = ~np.isnan(acc)
        ax.bar(centres[full], acc[full], width=width * 0.95, color="#4C78A8", edgecolor="k", lw=0.4, label="accuracy")
        ax.bar(
            centres[full],
            conf[full],
            width=width * 0.95,
            fill=False,
            edgecolor="#E45756",
            lw=1.2,
            label="mean confidence",
        )
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        t = summary["temperature"] if key == "after" else 1.0
        t = f"{t:.3f}" if isinstance(t, (int, float)) else str(t)
        ax.set_title(f"{key}: T = {t}, ECE = {part['ece']:.3f}, Brier = {part['brier']:.3f}", fontsize=9)
        ax.set_xlabel("confidence (top-class probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{title} ({summary['n']} images, {summary['n_bins']} bins)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
