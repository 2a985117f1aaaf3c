"""Figures of the monitoring page: agreement with signed reads over time, score drift, turnaround.

Each function returns PNG bytes (matplotlib, Agg backend) from results of :mod:`cxrtriage.metrics.agreement`
and :mod:`cxrtriage.metrics.drift`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cxrtriage.metrics.agreement import Agreement, TurnaroundSummary  # noqa: E402
from cxrtriage.metrics.drift import DriftResult  # noqa: E402
from cxrtriage.metrics.report import Estimate  # noqa: E402

__all__ = ["agreement_figure", "drift_figure", "turnaround_figure"]


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _err(est: Estimate) -> tuple[float, float, float] | None:
    if est.value is None:
        return None
    lo, hi = est.ci95 if est.ci95 else (est.value, est.value)
    return est.value, est.value - lo, hi - est.value


def agreement_figure(series: Mapping[str, Sequence[tuple[str, Agreement]]], dpi: int = 90) -> bytes:
    """Sensitivity and specificity against signed reads per period, with 95 % intervals, one line per model.

    Parameters
    ----------
    series : mapping model name -> sequence of (period, Agreement)
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=dpi, sharey=True)
    for ax, metric in zip(axes, ("sensitivity", "specificity")):
        for k, (name, rows) in enumerate(series.items()):
            xs, ys, lo, hi = [], [], [], []
            for i, (_, a) in enumerate(rows):
                e = _err(a.metrics[metric])
                if e is not None:
                    xs.append(i + 0.08 * k)
                    ys.append(e[0])
                    lo.append(e[1])
                    hi.append(e[2])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
        periods = next((list(dict(rows)) for rows in series.values() if rows), [])
        ax.set_xticks(range(len(periods)), periods, rotation=30, fontsize=8)
        ax.set_xlim(-0.5, max(1, len(periods)) - 0.5 + 0.08 * max(0, len(series) - 1))
        ax.set_title(f"{metric} vs signed reads (95% CI)", fontsize=10)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if any(series.values()):
        axes[0].legend(fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "no signed reads yet", ha="center", transform=axes[0].transAxes)
    return _png(fig)


def drift_figure(drifts: Mapping[str, DriftResult], dpi: int = 90) -> bytes:
    """Score distribution of served studies against the validation distribution, one panel per model.

    Parameters
    ----------
    drifts : mapping model name -> DriftResult
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    n = max(1, len(drifts))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.2), dpi=dpi, squeeze=False)
    for ax, (name, d) in zip(axes[0], drifts.items()):
        left = d.edges[:-1]
        wid = [b - a for a, b in zip(d.edges[:-1], d.edges[1:])]
        ax.bar(left, d.reference_share, width=wid, align="edge", alpha=0.5, label=f"validation (n={d.n_reference})")
        ax.bar(left, d.current_share, width=wid, align="edge", alpha=0.5, label=f"served (n={d.n_current})")
        psi = "–" if d.psi is None else f"{d.psi:.3f}"
        ax.set_title(f"{name}\nPSI {psi} ({d.level})", fontsize=9)
        ax.set_xlabel("P(finding)")
        ax.legend(fontsize=7)
    if not drifts:
        axes[0][0].text(0.5, 0.5, "no reference distribution", ha="center", transform=axes[0][0].transAxes)
    return _png(fig)


def turnaround_figure(summary: Mapping[str, TurnaroundSummary], dpi: int = 90) -> bytes:
    """Median received -> signed time with its 95 % interval, flagged vs unflagged studies.

    Parameters
    ----------
    summary : mapping group -> TurnaroundSummary
        From :func:`cxrtriage.metrics.agreement.turnaround`.
    dpi : int

    Returns
    -------
    bytes
        PNG.
    """
    fig, ax = plt.subplots(figsize=(4.5, 3), dpi=dpi)
    names = list(summary)
    for i, name in enumerate(names):
        e = _err(summary[name].median)
        if e is not None:
            ax.bar(i, e[0], yerr=[[e[1]], [e[2]]], capsize=4, color="#d33" if name == "flagged" else "#3a3")
    ax.set_xticks(range(len(names)), [f"{n} (n={summary[n].n})" for n in names])
    ax.set_ylabel("minutes, received -> signed")
    ax.set_title("Turnaround (median, 95% CI)", fontsize=10)
    return _png(fig)
