"""Training-curve figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_history"]


def plot_history(history: list[dict], out: str | Path) -> list[Path]:
    """Write ``curve_loss.png``, ``curve_accuracy.png`` and ``curve_auroc.png``.

    Parameters
    ----------
    history : list of dict
        One row per epoch with ``epoch, train_loss, val_loss, train_accuracy,
        val_accuracy, val_auroc``.
    out : path
        Folder for the PNGs.

    Returns
    -------
    list of Path
        The written files.
    """
    out = Path(out)
    epochs = [h["epoch"] for h in history]
    written = []
    for name, keys in {
        "loss": ("train_loss", "val_loss"),
        "accuracy": ("train_accuracy", "val_accuracy"),
        "auroc": ("val_auroc",),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 3.5), dpi=100)
        for key in keys:
            # a missing value is a gap in the curve (NaN), as matplotlib draws None
            ys = [float("nan") if h.get(key) is None else float(h[key]) for h in history]
            ax.plot(epochs, ys, marker="o", label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out / f"curve_{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
