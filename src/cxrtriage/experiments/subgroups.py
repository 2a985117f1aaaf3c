"""Metrics per subgroup (``cxr evaluate --by COLUMN``).

Groups images by a manifest column (``Sample.extra``), e.g. ``source``,
``nih_patient_sex``, ``nih_view_position`` or ``pneumonia_type``, or by a
derived column:

* ``age_band``: ``nih_patient_age`` (or ``age``) in bands 0-17, 18-39,
  40-59, 60-79, 80+ years;
* ``label`` / ``split`` / ``patient_id``: the sample's own fields (``label`` is the task's class);
* ``dataset_label``: the label as the dataset writes it, before the task's alias table
  (:data:`cxrtriage.data.discover.DATASET_LABEL`), e.g. ``COVID`` and ``Viral Pneumonia`` apart
  when both are a ``finding``.

Within each group the metrics are computed at the model's saved operating
point (the same rule as :func:`cxrtriage.metrics.decision.decide`). Small
groups give wide intervals; groups holding one class only report the
metrics that exist for it (e.g. sensitivity but no AUROC).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrtriage.config import ModelConfig
from cxrtriage.data.discover import Sample
from cxrtriage.metrics.classification import report_at_operating_point
from cxrtriage.metrics.decision import decide

__all__ = ["AGE_BANDS", "subgroup_value", "subgroup_metrics"]

#: Age bands in years, ``(label, low inclusive, high exclusive)``.
AGE_BANDS = (("0-17", 0, 18), ("18-39", 18, 40), ("40-59", 40, 60), ("60-79", 60, 80), ("80+", 80, 200))

MISSING = "(missing)"


def _age_band(value: str) -> str:
    try:
        age = float(str(value).strip().rstrip("Yy"))
    except ValueError:
        return MISSING
    for label, lo, hi in AGE_BANDS:
        if lo <= age < hi:
            return label
    return MISSING


def subgroup_value(sample: Sample, column: str) -> str:
    """The subgroup of one sample for ``column`` (``"(missing)"`` when absent or empty).

    Parameters
    ----------
    sample : Sample
    column : str
        A manifest column in ``sample.extra``, ``age_band``, ``label``,
        ``split`` or ``patient_id``.

    Returns
    -------
    str
    """
    if column in ("label", "split", "patient_id"):
        v = getattr(sample, column)
        return str(v) if v not in (None, "") else MISSING
    if column == "age_band":
        raw = sample.extra.get("nih_patient_age", sample.extra.get("age", ""))
        return _age_band(raw) if str(raw).strip() else MISSING
    v = str(sample.extra.get(column, "") or "").strip()
    return v if v else MISSING


def subgroup_metrics(
    samples: Sequence[Sample],
    probs: np.ndarray,
    config: ModelConfig,
    column: str,
    n_boot: int = 1000,
    seed: int = 0,
    min_size: int = 1,
) -> dict:
    """Metrics of a model per subgroup of the evaluated images.

    Parameters
    ----------
    samples : sequence of Sample, length N
        The evaluated images, in the order of ``probs``.
    probs : float array ``(N, K)``
        Class probabilities as the model outputs them (temperature applied),
        columns in ``config.classes`` order.
    config : ModelConfig
        Its ``threshold`` / ``positive_class`` define the decision
        (binary), else arg-max.
    column : str
        See :func:`subgroup_value`.
    n_boot : int
        Bootstrap replicates per group for the 95 % intervals (0 = none).
    seed : int
    min_size : int
        Groups with fewer images are listed with their size only.

    Returns
    -------
    dict
        ``{"column": str, "n": N, "operating_point": str, "groups": {value:
        {"n": int, "counts": {class: int}, "macro_over": [class, ...],
        "metrics": {name: {"value", "ci95"}}}}}`` (groups of at least ``min_size``
        images carry ``macro_over`` and ``metrics``). Metric names are
        :data:`cxrtriage.metrics.report.METRIC_NAMES` (one set for binary and
        multi-class; multi-class macro averages over the classes present in the
        group), values from :func:`cxrtriage.metrics.classification.metric_report`.
        Undefined metrics are ``None``. Groups are ordered by value (age bands in age order).

    Raises
    ------
    ValueError
        ``len(samples) != len(probs)``, or the column is absent from every sample.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(samples) != len(probs):
        raise ValueError(f"{len(samples)} samples but {len(probs)} probability rows")
    values = [subgroup_value(s, column) for s in samples]
    if values and all(v == MISSING for v in values):
        raise ValueError(f"column {column!r} is missing or empty for every image")
    y = np.array([s.target for s in samples], dtype=np.int64)
    pred = decide(probs, config)
    classes = list(config.classes)
    positive = classes.index(config.positive_class) if len(classes) == 2 and config.positive_class in classes else None
    order = [b[0] for b in AGE_BANDS] if column == "age_band" else None
    keys = sorted(set(values), key=lambda v: (v == MISSING, order.index(v) if order and v in order else 0, v))
    groups = {}
    for v in keys:
        idx = np.array([i for i, x in enumerate(values) if x == v], dtype=np.int64)
        entry = {"n": int(len(idx)), "counts": {c: int((y[idx] == j).sum()) for j, c in enumerate(classes)}}
        if len(idx) >= min_size:
            rep = report_at_operating_point(y[idx], probs[idx], config, n_boot=n_boot, seed=seed, y_pred=pred[idx])
            entry["macro_over"] = rep.macro_over
            entry["metrics"] = {k: e.to_dict() for k, e in rep.metrics.items()}
        groups[v] = entry
    rule = (
        f"{config.positive_class} if p >= {config.threshold:.4f} ({config.threshold_rule})"
        if positive is not None and config.threshold is not None
        else "argmax"
    )
    return {"column": column, "n": int(len(samples)), "operating_point": rule, "groups": groups}
