"""Score labelled datasets with a trained model: ``cxr evaluate``.

One dataset: its figures and files in the output folder. Several datasets
(external validation, Collins et al., TRIPOD+AI, BMJ 2024): one sub-folder per
dataset with the same files, and one table ``external.md`` / ``.csv`` / ``.json``
with a row per dataset (n, class counts, metrics with 95 % CIs), so in-source
and out-of-source figures stand side by side.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report

from cxrtriage import DISCLAIMER
from cxrtriage.cards.plots import plot_confusion_matrix, plot_roc
from cxrtriage.cards.tables import write_external_tables
from cxrtriage.data.cache import load_cached
from cxrtriage.data.dedupe import unique_dataset_names
from cxrtriage.data.discover import DatasetError, Sample, discover
from cxrtriage.experiments.subgroups import subgroup_metrics
from cxrtriage.inference.predictor import Predictor
from cxrtriage.metrics.classification import report_at_operating_point
from cxrtriage.metrics.decision import decide
from cxrtriage.metrics.report import MetricReport
from cxrtriage.tasks import get_task

__all__ = [
    "EvaluationResult",
    "MultiEvaluation",
    "ScoredSet",
    "evaluate",
    "evaluate_many",
    "dataset_names",
    "score_dataset",
    "score_samples",
]


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


@dataclass
class ScoredSet:
    """A labelled dataset scored by a model at its saved temperature and operating point.

    Attributes
    ----------
    samples : list of Sample, length M
        Readable labelled images of the task.
    probs : numpy.ndarray
        ``float64 (M, K)`` calibrated class probabilities, rows sum to 1.
    y_pred : numpy.ndarray
        ``int64 (M,)`` decided class per image (:func:`cxrtriage.metrics.decision.decide`).
    skipped : list of (path, reason)
        Unreadable images.
    report : MetricReport
        Metrics with 95 % bootstrap intervals.
    excluded : int
        Labelled images left out by ``exclude_where`` (see :func:`score_dataset`).
    """

    samples: list[Sample]
    probs: np.ndarray
    y_pred: np.ndarray
    skipped: list[tuple[str, str]]
    report: MetricReport
    excluded: int = 0


def score_dataset(
    predictor: Predictor,
    data: str | Path,
    split: str | None = None,
    cache_dir: str | None = None,
    n_boot: int = 1000,
    progress: bool = False,
    seed: int = 0,
    exclude_where: Sequence[str] = (),
) -> ScoredSet:
    """Score every labelled image of a dataset (or one split) at the model's operating point.

    Parameters
    ----------
    predictor : Predictor
        The model (its config gives task, temperature and threshold).
    data : path
        Dataset folder or manifest; labels are mapped by the task's alias table
        (:mod:`cxrtriage.tasks`); images of labels outside the task are left out.
    split : str, optional
        Only this split.
    cache_dir : str, optional
    n_boot : int
        Bootstrap replicates for the 95 % intervals (0: none).
    progress : bool
    seed : int
        Bootstrap seed.
    exclude_where : sequence of str
        Manifest columns: an image whose value in any of them is non-empty is left out
        (e.g. ieee8023-cxr's ``covid19_radiography_duplicate``, set for images that are
        also in the COVID-19 Radiography Database, so a model trained there is not
        scored on its own training images). ``COLUMN=VALUE`` leaves out the images whose
        column equals ``VALUE`` (case-insensitive), e.g. ``dataset_label=Viral_Pneumonia``
        (:data:`cxrtriage.data.discover.DATASET_LABEL`); a dataset without that column keeps all.

    Returns
    -------
    ScoredSet

    Raises
    ------
    cxrtriage.data.DatasetError
        No labelled image of the task's classes in ``data``, or none readable, or an
        ``exclude_where`` column that the manifest does not have.
    """
    cfg = predictor.config
    task = get_task(cfg.task)
    samples = discover(data, task, split)
    n_all = len(samples)
    for rule in exclude_where:
        col, has_value, value = rule.partition("=")
        if has_value:
            samples = [s for s in samples if str(s.extra.get(col) or "").strip().lower() != value.strip().lower()]
            continue
        if samples and not any(col in s.extra for s in samples):
            raise DatasetError(f"{data}: no manifest column {col!r} (given to exclude images)")
        samples = [s for s in samples if not str(s.extra.get(col) or "").strip()]
    kept, probs, skipped = score_samples(predictor, samples, cache_dir, progress)
    if not kept:
        raise DatasetError(f"{data}: none of the {len(samples)} images could be read")
    y = np.array([s.target for s in kept])
    y_pred = np.asarray(decide(probs, cfg), dtype=np.int64)
    report = report_at_operating_point(y, probs, cfg, n_boot=n_boot, seed=seed, y_pred=y_pred)
    return ScoredSet(kept, probs, y_pred, skipped, report, excluded=n_all - len(samples))


def dataset_names(datasets: Sequence[str | Path]) -> list[str]:
    """Short unique dataset names (:func:`cxrtriage.data.dedupe.unique_dataset_names`): folder names, made unique.

    Returns
    -------
    list of str
        Same length and order as ``datasets``.
    """
    return unique_dataset_names(datasets)


@dataclass
class MultiEvaluation:
    """Outcome of :func:`evaluate_many`.

    Attributes
    ----------
    results : dict str -> EvaluationResult
        Dataset name -> its evaluation (files in ``out/<name>/``).
    out : Path
        Output folder holding ``external.md``, ``external.csv``, ``external.json``.
    tables : list of Path
    """

    results: dict[str, EvaluationResult]
    out: Path
    tables: list[Path] = field(default_factory=list)


def evaluate_many(
    model_dir: str | Path | None,
    datasets: Sequence[str | Path],
    out: str | Path,
    split: str | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    n_boot: int = 1000,
    by: list[str] | None = None,
    device: str = "cpu",
) -> MultiEvaluation:
    """Evaluate one model on several datasets; one row per dataset in ``external.*``.

    Parameters
    ----------
    model_dir : path or None
        Model folder or shipped model name (None: the shipped default model).
    datasets : sequence of paths
        Dataset folders or manifests (at least one); names from :func:`dataset_names`.
    out : path
        Output folder; dataset ``name`` gets ``out/<name>/`` with the files of :func:`evaluate`.
    split, cache_dir, progress, n_boot, by, device
        As in :func:`evaluate`, applied to every dataset.

    Returns
    -------
    MultiEvaluation

    Raises
    ------
    ValueError
        No dataset given.
    cxrtriage.data.DatasetError
        A dataset has no labelled, readable image of the task (the message names it).
    """
    if not datasets:
        raise ValueError("evaluate_many: no dataset given")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(model_dir, device=device)
    results: dict[str, EvaluationResult] = {}
    for name, data in zip(dataset_names(datasets), datasets):
        results[name] = evaluate(
            model_dir, data, out / name, split, cache_dir, progress, n_boot, by, predictor=predictor
        )
    cfg = predictor.config
    tables = write_external_tables(
        [(name, str(r.metrics["data"]), r.report) for name, r in results.items()],
        out,
        title=f"{cfg.task} model {predictor.model_dir or 'shipped'} ({cfg.version}) on {len(results)} datasets",
    )
    return MultiEvaluation(results, out, tables)


def evaluate(
    model_dir: str | Path | None,
    data: str | Path,
    out: str | Path,
    split: str | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
    n_boot: int = 1000,
    by: list[str] | None = None,
    predictor: Predictor | None = None,
    device: str = "cpu",
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
    predictor : Predictor, optional
        An already loaded model (then ``model_dir`` is only recorded).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the model (when ``predictor`` is not given).

    Returns
    -------
    EvaluationResult

    Raises
    ------
    cxrtriage.data.DatasetError
        No labelled image of the task's classes, or none readable.
    """
    t0 = time.time()
    predictor = predictor or Predictor(model_dir, device=device)
    cfg = predictor.config
    task = get_task(cfg.task)
    scored = score_dataset(predictor, data, split, cache_dir, n_boot, progress)
    kept, probs, skipped, y_pred, report = scored.samples, scored.probs, scored.skipped, scored.y_pred, scored.report
    y = np.array([s.target for s in kept])
    classes = list(cfg.classes)
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
