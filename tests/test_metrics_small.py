"""Metrics against hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxrtriage.metrics.classification import auroc, metric_report


def _probs(p1: np.ndarray) -> np.ndarray:
    return np.stack([1 - p1, p1], 1)


def test_binary_metrics_hand_computed() -> None:
    # 10 images, positive = class 1; threshold 0.5
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.55])
    r = metric_report(y, _probs(p), ["n", "p"], task="t", positive_class="p", threshold=0.5, n_boot=0)
    m = {k: v.value for k, v in r.metrics.items()}
    # called positive: 0.9 0.8 0.6 (TP=3), 0.7 0.55 (FP=2); FN = 1 (0.3); TN = 4
    (tn, fp), (fn, tp) = r.confusion_matrix
    assert (tp, fp, tn, fn) == (3, 2, 4, 1)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["ppv"] == pytest.approx(3 / 5)
    assert m["npv"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["accuracy"] == pytest.approx(7 / 10)
    # AUROC: pairs (pos, neg) with pos score > neg score, ties count 1/2.
    pos, neg = p[y == 1], p[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    assert m["auroc"] == pytest.approx(wins / (len(pos) * len(neg)))
    assert m["auroc"] == pytest.approx(20 / 24)
    assert r.confusion_matrix == [[4, 2], [1, 3]]


def test_multiclass_metrics_hand_computed() -> None:
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
    probs = np.full((9, 3), 0.1)
    probs[np.arange(9), pred] = 0.8
    r = metric_report(y, probs, classes, task="t", n_boot=0)
    pc = {c: {k: v.value for k, v in m.items()} for c, m in r.per_class.items()}
    assert r.confusion_matrix == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    # class a: TP 2, FN 1, FP 1, TN 5
    a = pc["a"]
    assert a["sensitivity"] == pytest.approx(2 / 3)
    assert a["specificity"] == pytest.approx(5 / 6)
    assert a["ppv"] == pytest.approx(2 / 3)
    assert a["f1"] == pytest.approx(4 / 6)
    # class b: TP 1, FN 1, FP 1, TN 6 ; class c: TP 3, FN 1, FP 1, TN 4
    assert pc["b"]["sensitivity"] == pytest.approx(1 / 2)
    assert pc["b"]["specificity"] == pytest.approx(6 / 7)
    assert pc["c"]["ppv"] == pytest.approx(3 / 4)
    assert pc["c"]["specificity"] == pytest.approx(4 / 5)
    sens = [2 / 3, 1 / 2, 3 / 4]
    assert r.value("macro_sensitivity") == pytest.approx(np.mean(sens))
    assert r.value("sensitivity") == pytest.approx(np.mean(sens))
    f1 = [2 * 2 / (4 + 1 + 1), 2 * 1 / (2 + 1 + 1), 2 * 3 / (6 + 1 + 1)]
    assert r.value("f1") == pytest.approx(np.mean(f1))
    assert r.value("accuracy") == pytest.approx(6 / 9)
    # One-vs-rest AUROC of class a: scores 0.8 for predicted-a, 0.1 otherwise.
    sa = probs[:, 0]
    pos, neg = sa[y == 0], sa[y != 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert pc["a"]["auroc"] == pytest.approx(wins / (len(pos) * len(neg)))
    assert r.value("auroc") == pytest.approx(np.mean([v["auroc"] for v in pc.values()]))
    assert auroc(y, probs) == pytest.approx(r.value("auroc"))


def test_bootstrap_intervals_contain_point_estimate() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 3)
    p1 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.55] * 3)
    r = metric_report(y, _probs(p1), ["n", "p"], task="t", positive_class="p", threshold=0.5, n_boot=200, seed=0)
    for k in ("auroc", "sensitivity", "specificity"):
        est = r.metrics[k]
        assert est.ci95 is not None and est.value is not None
        assert est.ci95[0] <= est.value <= est.ci95[1]
    assert r.value("sensitivity") == pytest.approx(0.75)
