"""Binary metrics and operating points against hand-computed cases."""

import numpy as np
import pytest

from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.operating_point import choose_threshold, parse_rule


def scored(y: list[int] | np.ndarray, p: list[float] | np.ndarray, threshold: float, positive: int = 1) -> dict:
    """Headline values at a threshold plus TP/FN/FP/TN, from :func:`metric_report`."""
    p1 = np.asarray(p, dtype=float)
    probs = np.stack([1 - p1, p1], 1) if positive == 1 else np.stack([p1, 1 - p1], 1)
    r = metric_report(y, probs, ["c0", "c1"], task="t", positive_class=f"c{positive}", threshold=threshold, n_boot=0)
    cm = np.asarray(r.confusion_matrix)
    tp = int(cm[positive, positive])
    fn = int(cm[positive].sum()) - tp
    fp = int(cm[:, positive].sum()) - tp
    tn = int(cm.sum()) - tp - fn - fp
    return {k: v.value for k, v in r.metrics.items()} | {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "tn": tn,
        "confusion_matrix": r.confusion_matrix,
    }


def test_binary_metrics_hand_case() -> None:
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.6, 0.3, 0.9, 0.8, 0.4, 0.7, 0.95, 0.55]
    m = scored(y, p, threshold=0.5)
    # TP = 5 (0.9, 0.8, 0.7, 0.95, 0.55), FN = 1 (0.4), FP = 1 (0.6), TN = 3
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (5, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(5 / 6)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(5 / 6)
    assert m["npv"] == pytest.approx(3 / 4)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["f1"] == pytest.approx(5 / 6)
    # AUROC: pairs (pos > neg) = 22 of 24 (0.4 < 0.6 and 0.55 < 0.6 lose)
    assert m["auroc"] == pytest.approx(22 / 24)
    assert m["confusion_matrix"] == [[3, 1], [1, 5]]


def test_positive_class_zero() -> None:
    m = scored([0, 0, 1], [0.9, 0.8, 0.1], threshold=0.5, positive=0)
    assert m["tp"] == 2 and m["tn"] == 1 and m["accuracy"] == 1.0


def test_youden_threshold_separates_perfectly() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    t = choose_threshold(y, p, "youden")
    assert 0.3 < t <= 0.6
    m = scored(y, p, t)
    assert m["sensitivity"] == 1 and m["specificity"] == 1


def test_target_sensitivity_rule() -> None:
    y = np.array([0] * 5 + [1] * 5)
    p = np.array([0.1, 0.2, 0.3, 0.45, 0.65, 0.4, 0.6, 0.7, 0.8, 0.9])
    t = choose_threshold(y, p, "sensitivity:1.0")
    assert scored(y, p, t)["sensitivity"] == 1.0
    assert t <= 0.4
    t80 = choose_threshold(y, p, "sensitivity:0.8")
    m = scored(y, p, t80)
    assert m["sensitivity"] >= 0.8 and m["specificity"] == pytest.approx(0.8)


def test_bad_rules() -> None:
    with pytest.raises(ValueError):
        parse_rule("f1")
    with pytest.raises(ValueError):
        parse_rule("sensitivity:1.5")


def test_bootstrap_ci_contains_point_estimate() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p1 = np.clip(y * 0.3 + rng.random(300) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    pred = (p1 >= 0.5).astype(int)
    r = metric_report(y, probs, ["n", "p"], task="t", positive_class="p", threshold=0.5, n_boot=200)
    acc = float(np.mean(pred == y))
    ci_acc, ci_auc = r.metrics["accuracy"].ci95, r.metrics["auroc"].ci95
    assert r.value("accuracy") == pytest.approx(acc)
    assert ci_acc is not None and ci_auc is not None
    assert ci_acc[0] <= acc <= ci_acc[1]
    assert ci_auc[0] < ci_auc[1]
