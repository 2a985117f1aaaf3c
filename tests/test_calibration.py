"""Temperature scaling, ECE and Brier against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from cxrtriage.metrics.calibration import (
    brier_score,
    calibration_summary,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    softmax,
)


def test_ece_hand_computed():
    # 4 images; confidences 0.9, 0.9 (one right, one wrong) and 0.6, 0.6 (both right).
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 0, 0, 1])
    # bin of 0.9: acc 0.5, conf 0.9 -> |0.4| * 2/4 ; bin of 0.6: acc 1, conf 0.6 -> 0.4 * 2/4
    assert expected_calibration_error(probs, y, n_bins=15) == pytest.approx(0.4)
    r = reliability_bins(probs, y, n_bins=10)
    assert sum(r["count"]) == 4
    assert r["count"][8] == 2 and r["count"][5] == 2  # 0.9 in (0.8, 0.9], 0.6 in (0.5, 0.6]


def test_brier_hand_computed():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 1])
    expect = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2
    assert brier_score(probs, y) == pytest.approx(expect)


def test_fit_temperature_recovers_known_temperature():
    # Labels drawn from softmax(z); logits shown to the fit are z * 3, so T ~= 3.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, size=(6000, 3))
    p = softmax(z)
    y = np.array([rng.choice(3, p=row) for row in p])
    t = fit_temperature(z * 3.0, y)
    assert t == pytest.approx(3.0, rel=0.08)
    s = calibration_summary(z * 3.0, y, t)
    assert s["after"]["ece"] < s["before"]["ece"]
    assert s["after"]["nll"] <= s["before"]["nll"] + 1e-9


def test_temperature_keeps_argmax_and_binary_ranking():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(50, 2))
    for t in (0.5, 2.0):
        assert (softmax(z, t).argmax(1) == softmax(z).argmax(1)).all()
        assert (np.argsort(softmax(z, t)[:, 1]) == np.argsort(softmax(z)[:, 1])).all()


def test_fit_temperature_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 2)), np.zeros(0))
