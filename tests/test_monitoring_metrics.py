"""Pure monitoring metrics: score drift (PSI, KS), agreement with signed reads, turnaround."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from cxrtriage.metrics.agreement import agreement, agreement_over_time, turnaround
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.drift import drift, ks_from_histogram, psi, score_histogram


def test_histogram_and_psi_by_hand():
    h = score_histogram([0.0, 0.05, 0.5, 0.95, 1.0], n_bins=2)
    assert h["edges"] == [0.0, 0.5, 1.0] and h["counts"] == [2, 3]
    # shares 0.5/0.5 against 0.25/0.75: sum (p - q) ln(p / q)
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi([1, 1], [1, 3]) == pytest.approx(expected)
    assert psi([5, 5], [50, 50]) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        score_histogram([1.5])


def test_drift_levels_and_ks_against_scipy():
    rng = np.random.default_rng(0)
    ref_scores = rng.beta(2, 5, 2000)
    ref = score_histogram(ref_scores, n_bins=20)
    same = drift(ref, rng.beta(2, 5, 500))
    shifted = drift(ref, rng.beta(5, 2, 500))
    assert same.level == "ok" and same.psi < 0.1
    assert shifted.level == "alert" and shifted.psi > 0.25 and shifted.ks_p < 1e-6
    assert drift(ref, rng.beta(2, 5, 5)).level == "no_data"
    assert drift(ref, []).psi is None
    # KS at the bin edges: a lower bound of the exact two-sample D, close to it with 20 bins
    cur = rng.beta(3, 4, 400)
    d, _ = ks_from_histogram(ref["counts"], cur, ref["edges"])
    exact = ks_2samp(ref_scores, cur).statistic
    assert d <= exact + 1e-12 and d > exact - 0.06


def test_agreement_counts_and_intervals():
    reader = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    flag = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], bool)
    a = agreement(reader, flag, n_boot=200)
    assert a.counts == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    assert a.metrics["sensitivity"].value == pytest.approx(3 / 4)
    assert a.metrics["specificity"].value == pytest.approx(5 / 6)
    assert a.metrics["ppv"].value == pytest.approx(3 / 4)
    assert a.metrics["npv"].value == pytest.approx(5 / 6)
    # the same point values as the project's metric_report with these calls
    rep = metric_report(
        reader.astype(int),
        np.stack([~flag, flag], 1).astype(float),
        ["no", "yes"],
        task="t",
        n_boot=0,
        y_pred=flag.astype(int),
    )
    for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
        assert a.metrics[k].value == pytest.approx(rep.value(k))
    lo, hi = a.metrics["sensitivity"].ci95
    assert 0 <= lo <= 0.75 <= hi <= 1
    d = a.to_dict()
    assert d["metrics"]["specificity"]["value"] == pytest.approx(5 / 6)
    empty = agreement([], [], n_boot=10)
    assert empty.n == 0 and empty.metrics["sensitivity"].value is None
    with pytest.raises(ValueError, match="differ in length"):
        agreement([True], [True, False])


def test_agreement_over_time_and_turnaround():
    periods = ["2026-W02", "2026-W01", "2026-W01", "2026-W02"]
    rows = agreement_over_time(periods, [1, 0, 1, 0], [1, 0, 0, 0], n_boot=20)
    assert [p for p, _ in rows] == ["2026-W01", "2026-W02"]
    assert rows[0][1].counts == {"tp": 0, "fp": 0, "fn": 1, "tn": 1}
    t = turnaround([10, 20, 30, 100, 200], [1, 1, 1, 0, 0], n_boot=100)
    assert t["flagged"].n == 3 and t["flagged"].median.value == 20
    assert t["unflagged"].median.value == 150
    assert turnaround([], [])["flagged"].n == 0
    with pytest.raises(ValueError, match=">= 0"):
        turnaround([-1], [True])
