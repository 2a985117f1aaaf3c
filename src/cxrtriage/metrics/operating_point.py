"""Operating points (decision thresholds) chosen on validation data.

Rules:

* ``youden``: maximise Youden's J = sensitivity + specificity - 1 (Youden,
  "Index for rating diagnostic tests", Cancer 3(1):32-35, 1950). The
  threshold is the midpoint between the two neighbouring ROC thresholds, so
  it does not sit exactly on a validation score.
* ``sensitivity:<s>``: the highest threshold whose validation sensitivity is
  at least ``s`` (e.g. ``sensitivity:0.95``), i.e. the best specificity at that
  sensitivity.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

__all__ = ["choose_threshold", "parse_rule"]


def parse_rule(rule: str) -> tuple[str, float | None]:
    """Split ``"sensitivity:0.95"`` into ``("sensitivity", 0.95)``; ``"youden"`` -> ``("youden", None)``.

    Raises
    ------
    ValueError
        Unknown rule or a target outside (0, 1].
    """
    name, _, arg = rule.partition(":")
    if name == "youden" and not arg:
        return name, None
    if name == "sensitivity":
        try:
            target = float(arg)
        except ValueError:
            raise ValueError(f"bad threshold rule {rule!r}: expected sensitivity:<0..1>") from None
        if not 0 < target <= 1:
            raise ValueError(f"bad threshold rule {rule!r}: target sensitivity must be in (0, 1]")
        return name, target
    raise ValueError(f"unknown threshold rule {rule!r}; use 'youden' or 'sensitivity:<target>'")


def choose_threshold(y_true: np.ndarray, p_pos: np.ndarray, rule: str = "youden") -> float:
    """Choose a decision threshold on validation scores.

    Parameters
    ----------
    y_true : int array ``(N,)``
        1 for the positive class, 0 otherwise (both must be present).
    p_pos : float array ``(N,)``
        Probability of the positive class, in [0, 1].
    rule : str
        ``youden`` or ``sensitivity:<target>``.

    Returns
    -------
    float
        Threshold in [0, 1]; positive when ``p_pos >= threshold``.

    Raises
    ------
    ValueError
        One class only, or an unknown rule.
    """
    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_pos, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("both classes are needed in the validation data to choose a threshold")
    name, target = parse_rule(rule)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    thr = np.minimum(thr, 1.0)  # first ROC threshold is +inf
    if name == "youden":
        i = int(np.argmax(tpr - fpr))
    else:
        if target is None:  # parse_rule always gives a target for "sensitivity"
            raise ValueError(f"threshold rule {rule!r} has no target sensitivity")
        i = int(np.argmax(tpr >= target - 1e-12))
    # Midpoint towards the next lower score, so that the point's own images stay on the positive side.
    lower = thr[i + 1] if i + 1 < len(thr) else 0.0
    return float((thr[i] + lower) / 2) if i + 1 < len(thr) else float(thr[i])
