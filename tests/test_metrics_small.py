"""Metrics against hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest

from cxrtriage.metrics.classification import auroc, binary_metrics, multiclass_metrics
from cxrtriage.metrics.intervals import bootstrap_intervals, point_metrics


def test_binary_metrics_hand_computed():
    # 10 images, positive = class 1; threshold 0.5
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.55])
    m = binary_metrics(y, p, 0.5, positive=1)
    # called positive: 0.9 0.8 0.6 (TP=3), 0.7 0.55 (FP=2); FN = 1 (0.3); TN = 4
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 2, 4, 1)
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
    assert m["confusion_matrix"] == [[4, 2], [1, 3]]


def test_multiclass_metrics_hand_computed():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2])
    probs = np.full((9, 3), 0.1)
    probs[np.arange(9), pred] = 0.8
    m = multiclass_metrics(y, probs, classes)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    # class a: TP 2, FN 1, FP 1, TN 5
    a = m["per_class"]["a"]
    assert a["sensitivity"] == pytest.approx(2 / 3)
    assert a["specificity"] == pytest.approx(5 / 6)
    assert a["ppv"] == pytest.approx(2 / 3)
    assert a["f1"] == pytest.approx(4 / 6)
    # class b: TP 1, FN 1, FP 1, TN 6 ; class c: TP 3, FN 1, FP 1, TN 4
    assert m["per_class"]["b"]["sensitivity"] == pytest.approx(1 / 2)
    assert m["per_class"]["b"]["specificity"] == pytest.approx(6 / 7)
    assert m["per_class"]["c"]["ppv"] == pytest.approx(3 / 4)
    assert m["per_class"]["c"]["specificity"] == pytest.approx(4 / 5)
    sens = [2 / 3, 1 / 2, 3 / 4]
    assert m["macro"]["sensitivity"] == pytest.approx(np.mean(sens))
    assert m["weighted"]["sensitivity"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 4 * 3 / 4) / 9)
    f1 = [2 * 2 / (4 + 1 + 1), 2 * 1 / (2 + 1 + 1), 2 * 3 / (6 + 1 + 1)]
    assert m["macro"]["f1"] == pytest.approx(np.mean(f1))
    assert m["accuracy"] == pytest.approx(6 / 9)
    # One-vs-rest AUROC of class a: scores 0.8 for predicted-a, 0.1 otherwise.
    # positives (y=0): scores .8 .8 .1 ; negatives: .1 .1 .1(pred c->b?) ...
    sa = probs[:, 0]
    pos, neg = sa[y == 0], sa[y != 0]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    assert m["per_class"]["a"]["auroc"] == pytest.approx(wins / (len(pos) * len(neg)))
    assert m["macro_auroc"] == pytest.approx(np.mean([v["auroc"] for v in m["per_class"].values()]))
    assert auroc(y, probs) == pytest.approx(m["macro_auroc"])


def test_point_metrics_agrees_with_multiclass_metrics():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    pred = probs.argmax(1)
    pm = point_metrics(y, probs, pred, ["x", "y", "z"], None)
    mm = multiclass_metrics(y, probs, ["x", "y", "z"])
    assert pm["macro_sensitivity"] == pytest.approx(mm["macro"]["sensitivity"])
    assert pm["macro_f1"] == pytest.approx(mm["macro"]["f1"])
    assert pm["weighted_f1"] == pytest.approx(mm["weighted"]["f1"])
    assert pm["macro_auroc"] == pytest.approx(mm["macro_auroc"])
    for c in "xyz":
        assert pm[f"specificity_{c}"] == pytest.approx(mm["per_class"][c]["specificity"])


def test_bootstrap_intervals_contain_point_estimate():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0] * 3)
    p1 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05, 0.55] * 3)
    probs = np.stack([1 - p1, p1], 1)
    pred = (p1 >= 0.5).astype(int)
    ci = bootstrap_intervals(y, probs, pred, ["n", "p"], 1, n_boot=200, seed=0)
    for k in ("auroc", "sensitivity", "specificity"):
        lo, hi = ci[k]["ci95"]
        assert lo <= ci[k]["value"] <= hi
    assert ci["sensitivity"]["value"] == pytest.approx(0.75)
