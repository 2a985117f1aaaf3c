"""Score a labelled dataset with a trained model: ``cxr evaluate``."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report

from cxrtriage import DISCLAIMER
from cxrtriage.cards.plots import plot_confusion_matrix, plot_roc
from cxrtriage.data.cache import load_cached
from cxrtriage.data.discover import Sample, discover
from cxrtriage.experiments.subgroups import subgroup_metrics
from cxrtriage.inference.predictor import Predictor
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.decision import decide
from cxrtriage.metrics.report import MetricReport
from cxrtriage.tasks import get_task

__all__ = ["EvaluationResult", "evaluate", "score_samples"]


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    metrics : dict
        The content of ``metrics.json``: :meth:`cxrtriage.metrics.report.MetricReport.to_dict`
        plus ``threshold_rule, temperature, model, data, split, skipped, disclaimer``
        (and ``subgroups``, ``seconds``).
    report : MetricReport
        The scores themselves.
    out : Path
        Output folder.
    skipped : list of (path, reason)
    """

    metrics: dict
    out: Path
    skipped: list
    report: MetricReport


def score_samples(
    predictor: Predictor, samples: list[Sample], cache_dir: str | None = None, progress: bool = False
) -> tuple[list[Sample], np.ndarray, list[tuple[str, str]]]:
    """Class probabilities for labelled samples, decoding through the image cache.

    Returns
    -------
    (kept_samples, probs, skipped)
        ``kept_samples``: readable samples (list, length M); ``probs``:
        ``float64 (M, K)``; ``skipped``: ``(path, reason)`` of unreadable files.
    """
    cache = load_cached([s.path for s in samples], predictor.config.image_size, cache_dir, progress=progress)
    kept = [samples[i] for i in cache.index]
    probs = predictor.probabilities(cache.images) if kept else np.zeros((0, len(predictor.config.classes)))
    return kept, probs, cache.failures


def evaluate(
    model_dir: str | Path | None,
    data: str | Path,
    out: str | Path,
    split: str | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    n_boot: int = 1000,
    by: list[str] | None = None,
) -> EvaluationResult:
    """Evaluate a model on every image of a dataset (or one split of it).

    Writes into ``out``: ``metrics.json``, ``confusion_matrix.png``,
    ``roc_curve.png``, ``classification_report.txt`` and ``predictions.csv``.

    Parameters
    ----------
    model_dir : path or None
        Model folder (None: the shipped model).
    data : path
        Dataset folder or manifest (labels mapped by the model's task).
    out : path
        Output folder (created).
    split : str, optional
        Only this split (``train``, ``val``, ``test``...).
    cache_dir : str, optional
        Decoded-image cache folder.
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    by : list of str, optional
        Manifest columns (or ``age_band``) to report per-subgroup metrics for
        (``metrics.json`` key ``subgroups``); see
        :func:`cxrtriage.experiments.subgroups.subgroup_metrics`.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    cxrtriage.data.DatasetError
        No labelled image of the task's classes, or none readable.
    """
    t0 = time.time()
    predictor = Predictor(model_dir)
    cfg = predictor.config
    task = get_task(cfg.task)
    samples = discover(data, task, split)
    kept, probs, skipped = score_samples(predictor, samples, cache_dir, progress)
    if not kept:
        from cxrtriage.data.discover import DatasetError

        raise DatasetError(f"{data}: none of the {len(samples)} images could be read")
    y = np.array([s.target for s in kept])
    y_pred = decide(probs, cfg)
    classes = list(cfg.classes)
    report = metric_report(
        y,
        probs,
        classes,
        task=task.name,
        positive_class=cfg.positive_class if task.is_binary else None,
        threshold=cfg.threshold if task.is_binary else None,
        n_boot=n_boot,
        y_pred=y_pred,
    )
    metrics = {
        **report.to_dict(),
        "threshold_rule": cfg.threshold_rule,
        "temperature": cfg.temperature,
        "model": {"dir": str(predictor.model_dir or "shipped"), "arch": cfg.arch, "version": cfg.version},
        "data": str(data),
        "split": split,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "disclaimer": DISCLAIMER,
    }
    if by:
        metrics["subgroups"] = {col: subgroup_metrics(kept, probs, cfg, col, n_boot=n_boot) for col in by}
    metrics["seconds"] = round(time.time() - t0, 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    title = f"{task.name} - {cfg.version} - n={len(y)}"
    plot_confusion_matrix(metrics["confusion_matrix"], classes, out / "confusion_matrix.png", title)
    op = None
    sens, spec = report.value("sensitivity"), report.value("specificity")
    if task.is_binary and spec is not None and sens is not None:
        op = (1 - spec, sens)
    plot_roc(y, probs, classes, out / "roc_curve.png", task.positive_index if task.is_binary else None, op, title)
    text_report = classification_report(
        y, y_pred, labels=list(range(len(classes))), target_names=classes, digits=4, zero_division=0
    )
    (out / "classification_report.txt").write_text(
        f"cxrtriage evaluation: {title}\nmodel: {metrics['model']['dir']}\ndata: {data} (split: {split or 'all'})\n"
        f"threshold: {cfg.threshold} ({cfg.threshold_rule})\n\n{text_report}\n"
        f"skipped unreadable images: {len(skipped)}\n\n{DISCLAIMER}\n"
    )
    with (out / "predictions.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "predicted"] + [f"p_{c}" for c in classes])
        for s, row, yp in zip(kept, probs, y_pred):
            w.writerow([s.path, s.label, classes[int(yp)]] + [f"{v:.6f}" for v in row])
    return EvaluationResult(metrics, out, skipped, report)
