"""MetricReport: hand-counted confusion, macro over present classes, intervals, round trip, temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp

from cxrtriage.metrics.calibration import fit_temperature, softmax
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.report import METRIC_NAMES, MetricReport


def test_binary_report_matches_hand_counted_confusion() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7, 0.95, 0.55])
    r = metric_report(
        y, np.stack([1 - p1, p1], 1), ["normal", "pneumonia"], task="t", positive_class="pneumonia", threshold=0.5
    )
    # TP 5 (0.9 0.8 0.7 0.95 0.55), FN 1 (0.4), FP 1 (0.6), TN 3
    assert r.confusion_matrix == [[3, 1], [1, 5]]
    assert r.value("sensitivity") == pytest.approx(5 / 6)
    assert r.value("specificity") == pytest.approx(3 / 4)
    assert r.value("ppv") == pytest.approx(5 / 6)
    assert r.value("npv") == pytest.approx(3 / 4)
    assert r.value("accuracy") == pytest.approx(8 / 10)
    assert r.value("macro_sensitivity") == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert r.value("auroc") == pytest.approx(22 / 24)
    assert set(r.metrics) == set(METRIC_NAMES)
    assert r.class_counts == {"normal": 4, "pneumonia": 6}
    assert r.macro_over == ["normal", "pneumonia"]
    assert r.positive_class == "pneumonia" and r.threshold == 0.5
    # the threshold, not the arg-max, decides: at 0.65 the 0.6 and 0.55 calls flip
    r2 = metric_report(
        y, np.stack([1 - p1, p1], 1), ["normal", "pneumonia"], task="t", positive_class="pneumonia", threshold=0.65
    )
    assert r2.confusion_matrix == [[4, 0], [2, 4]]


def test_multiclass_macro_is_over_present_classes_only() -> None:
    # A 3-class model scored on a set holding only classes 0 and 2 (an external 2-class set).
    classes = ["normal", "bacterial", "viral"]
    y = np.array([0, 0, 0, 0, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 0, 1, 2, 2, 1, 0, 2])
    probs = np.full((9, 3), 0.1)
    probs[np.arange(9), pred] = 0.8
    r = metric_report(y, probs, classes, task="pneumonia-type", n_boot=0)
    # true 2-class macro sensitivity: (3/4 + 3/5) / 2, not (3/4 + 0 + 3/5) / 3
    assert r.value("macro_sensitivity") == pytest.approx((3 / 4 + 3 / 5) / 2)
    assert r.value("sensitivity") == pytest.approx((3 / 4 + 3 / 5) / 2)
    assert r.macro_over == ["normal", "viral"]
    assert r.class_counts == {"normal": 4, "bacterial": 0, "viral": 5}
    assert r.per_class["bacterial"]["sensitivity"].value is None
    assert r.per_class["bacterial"]["auroc"].value is None
    aucs = [r.per_class[c]["auroc"].value for c in ("normal", "viral")]
    assert r.value("auroc") == pytest.approx(np.mean(aucs))
    assert r.positive_class is None and r.threshold is None


def test_bootstrap_interval_contains_point_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200)
    probs[np.arange(200), y] += 0.5
    probs /= probs.sum(1, keepdims=True)
    r = metric_report(y, probs, ["a", "b", "c"], task="t", n_boot=200, seed=3)
    for name in METRIC_NAMES:
        est = r.metrics[name]
        assert est.value is not None and est.ci95 is not None
        assert est.ci95[0] <= est.value <= est.ci95[1], name
    assert r.n_boot == 200
    again = metric_report(y, probs, ["a", "b", "c"], task="t", n_boot=200, seed=3)
    assert again.to_dict() == r.to_dict()


def test_round_trip_to_dict_from_dict() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 50)
    p1 = np.clip(0.4 * y + 0.6 * rng.random(50), 0, 1)
    r = metric_report(y, np.stack([1 - p1, p1], 1), ["n", "p"], task="t", positive_class="p", threshold=0.4, n_boot=50)
    d = json.loads(json.dumps(r.to_dict()))
    back = MetricReport.from_dict(d)
    assert back == r
    assert back.to_dict() == r.to_dict()


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError):
        metric_report([0, 1], np.zeros((3, 2)), ["a", "b"], task="t")
    with pytest.raises(ValueError):
        metric_report([0, 5], np.full((2, 2), 0.5), ["a", "b"], task="t")
    with pytest.raises(ValueError, match="y_pred"):
        metric_report([0, 1], np.full((2, 2), 0.5), ["a", "b"], task="t", y_pred=[0, 2])


@pytest.mark.parametrize("k", [2, 3, 4])
def test_counts_and_auroc_equal_scikit_learn(k: int) -> None:
    """The bincount counts and the Mann-Whitney AUROC are scikit-learn's, with tied scores, calls of classes
    absent from the truth and classes absent altogether, on every bootstrap-sized resample."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        multilabel_confusion_matrix,
        roc_auc_score,
    )

    from cxrtriage.metrics.classification import _point

    rng = np.random.default_rng(k)
    for trial in range(30):
        n = int(rng.integers(5, 80))
        present = k if trial % 3 else k - 1  # every third sample lacks the last class in the truth
        y = rng.integers(0, present, n)
        probs = rng.dirichlet(np.ones(k), n).round(1)  # rounding makes many ties
        pred = rng.integers(0, k, n)
        head, per = _point(y, probs, pred, k, 1 if k == 2 else None)
        mcm = multilabel_confusion_matrix(y, pred, labels=list(range(k)))
        for c in range(k):
            (tn, fp), (fn, tp) = mcm[c]
            assert per[c]["sensitivity"] == (tp / (tp + fn) if tp + fn else None)
            assert per[c]["specificity"] == (tn / (tn + fp) if tn + fp else None)
            assert per[c]["ppv"] == (tp / (tp + fp) if tp + fp else None)
            truth = y == c
            if 0 < truth.sum() < n:
                assert per[c]["auroc"] == pytest.approx(roc_auc_score(truth, probs[:, c]), abs=1e-12)
            else:
                assert per[c]["auroc"] is None
        assert head["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
        with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("ignore")
            assert head["macro_sensitivity"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)


def test_scipy_temperature_equals_grid_minimum() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, size=(500, 3))
    y = np.array([rng.choice(3, p=row) for row in softmax(z)])
    logits = z * 3.0
    t = fit_temperature(logits, y)
    grid = np.linspace(2.5, 4.5, 20001)  # step 1e-4
    nll = [np.mean(logsumexp(logits / g, axis=1) - logits[np.arange(len(y)), y] / g) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], abs=2e-4)
    # the former torch L-BFGS fit gave 3.3147025 on this case (its stopping tolerance ~1e-4)
    assert t == pytest.approx(3.3147025, abs=2e-4)
