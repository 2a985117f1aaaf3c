"""``cxr calibrate``: temperature scaling and operating point of a saved model folder.

Reads the model's validation images from its bundle's ``split`` section (as written by the
trainer; :func:`cxrtriage.data.split.recorded_validation_paths`) and their labels from the dataset
recorded there (or ``--data``), fits the temperature on the
validation logits (Guo et al. 2017), re-chooses the binary threshold on the
*calibrated* validation probabilities, and writes the result into
``config.json`` (read by evaluate, predict and the server), the bundle's
``calibration`` section and ``reliability.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrtriage.cards.figures import reliability_diagram
from cxrtriage.config import ConfigKeyError
from cxrtriage.data.cache import load_cached
from cxrtriage.data.discover import DatasetError, discover
from cxrtriage.data.split import recorded_validation_paths
from cxrtriage.inference.backend import TorchBackend, config_batches
from cxrtriage.metrics.calibration import calibration_summary, fit_temperature, softmax
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.operating_point import choose_threshold, parse_rule
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import CalibrationSection, ModelBundle, ModelLoadError
from cxrtriage.tasks import get_task

__all__ = ["validation_logits", "calibrate_model_dir", "operating_point"]


def validation_logits(
    model_dir: str | Path, data: str | Path | None = None, cache_dir: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Logits and labels of a model folder's validation images.

    Parameters
    ----------
    model_dir : path
        Model bundle folder with a ``split`` section (:class:`cxrtriage.models.bundle.ModelBundle`).
    data : path, optional
        Dataset that holds the validation images (overrides the recorded ``split.data``).
    cache_dir : path, optional
        Decoded-image cache.

    Returns
    -------
    (logits, y, paths)
        ``float64 (N, K)``, ``int64 (N,)`` and the N readable validation paths.

    Raises
    ------
    ModelLoadError
        Missing files in the model folder.
    DatasetError
        Validation images not found in the dataset, or unreadable.
    """
    d = Path(model_dir)
    try:
        bundle = ModelBundle.load(d)
    except ConfigKeyError as exc:
        raise ModelLoadError(str(exc)) from None
    model, cfg = bundle.load_model(), bundle.config
    sp = bundle.split
    try:
        data, val_paths = recorded_validation_paths(
            d, sp.data if sp else None, sp.val_paths_relative if sp else None, data
        )
    except (FileNotFoundError, ValueError) as exc:
        raise ModelLoadError(str(exc)) from None
    task = get_task(cfg.task)
    label_of = {str(Path(s.path).resolve()): s.target for s in discover(data, task)}
    missing = [p for p in val_paths if p not in label_of]
    if missing:
        raise DatasetError(f"{data}: {len(missing)} validation image(s) of {d} not in the dataset, e.g. {missing[0]}")
    cache = load_cached(val_paths, cfg.image_size, cache_dir)
    if len(cache.index) == 0:
        raise DatasetError(f"{d}: no readable validation image")
    y = np.array([label_of[val_paths[i]] for i in cache.index], dtype=np.int64)
    logits, _ = TorchBackend(model, cfg, threads=None).run(config_batches(cache.images, cfg, 64))
    return logits, y, [val_paths[i] for i in cache.index]


def operating_point(
    y: np.ndarray, probs: np.ndarray, classes: Sequence[str], positive_class: str, rule: str, task: str = ""
) -> tuple[float | None, MetricReport]:
    """Threshold chosen on (calibrated) validation probabilities, and the report there (no intervals).

    Parameters
    ----------
    y : int array ``(N,)``
    probs : float array ``(N, K)``
    classes : sequence of K str
    positive_class : str
    rule : str
        ``youden`` or ``sensitivity:<s>`` (binary); multi-class tasks use arg-max.
    task : str
        Task name recorded in the report.

    Returns
    -------
    (threshold, report)
        ``threshold`` is ``None`` for multi-class tasks.
    """
    classes = list(classes)
    thr = None
    if len(classes) == 2:
        pos = classes.index(positive_class)
        thr = choose_threshold((y == pos).astype(int), probs[:, pos], rule)
    rep = metric_report(
        y,
        probs,
        classes,
        task=task,
        positive_class=positive_class if thr is not None else None,
        threshold=thr,
        n_boot=0,
    )
    return thr, rep


def calibrate_model_dir(
    model_dir: str | Path,
    data: str | Path | None = None,
    rule: str | None = None,
    n_bins: int = 15,
    cache_dir: str | Path | None = None,
    write: bool = True,
) -> dict:
    """Fit the temperature and the operating point of a model folder, and save them.

    Parameters
    ----------
    model_dir : path
        Model folder (see :func:`validation_logits`).
    data : path, optional
        Dataset holding the validation images.
    rule : str, optional
        ``youden`` or ``sensitivity:<s>``; default: the training run's
        ``threshold_rule`` (else ``youden``).
    n_bins : int
        ECE bins (15, Guo et al. 2017).
    cache_dir : path, optional
    write : bool
        Update ``config.json``, the bundle's ``calibration`` section and ``reliability.png``.

    Returns
    -------
    dict
        ``temperature``, ``rule``, ``threshold``, ``threshold_uncalibrated``,
        ``validation`` metrics at the threshold, ``ece_before``/``ece_after``,
        ``brier_before``/``brier_after``, ``n_val`` and the full ``summary``.
    """
    d = Path(model_dir)
    bundle = ModelBundle.load(d)
    cfg = bundle.config
    if rule is None:
        rule = bundle.train_config.threshold_rule if bundle.train_config else "youden"
    parse_rule(rule)
    logits, y, _ = validation_logits(d, data, cache_dir)
    t = fit_temperature(logits, y)
    summary = calibration_summary(logits, y, t, n_bins)
    thr_raw, _ = operating_point(y, softmax(logits), cfg.classes, cfg.positive_class, rule, cfg.task)
    thr, val = operating_point(y, softmax(logits, t), cfg.classes, cfg.positive_class, rule, cfg.task)
    result = {
        "model": str(d),
        "temperature": t,
        "rule": rule if thr is not None else "argmax",
        "threshold": thr,
        "threshold_uncalibrated": thr_raw,
        "n_val": int(len(y)),
        "ece_before": summary["before"]["ece"],
        "ece_after": summary["after"]["ece"],
        "brier_before": summary["before"]["brier"],
        "brier_after": summary["after"]["brier"],
        "nll_before": summary["before"]["nll"],
        "nll_after": summary["after"]["nll"],
        "validation": val.flat_values(),
        "validation_report": val.to_dict(),
        "method": "temperature scaling, bounded Brent search over log T on validation NLL (Guo et al., ICML 2017); "
        f"ECE with {n_bins} equal-width bins (Naeini et al., AAAI 2015); Brier (1950)",
        "note": "ECE after is measured on the same validation images the temperature was fitted on",
        "summary": summary,
    }
    if write:
        cfg.temperature = t
        cfg.threshold = thr
        if thr is not None:
            cfg.threshold_rule = f"{rule} on the calibrated validation probabilities (T = {t:.4f})"
        bundle.calibration = CalibrationSection(
            temperature=t,
            rule=result["rule"],
            n_val=result["n_val"],
            ece_before=result["ece_before"],
            ece_after=result["ece_after"],
            brier_before=result["brier_before"],
            brier_after=result["brier_after"],
            threshold=thr,
            threshold_uncalibrated=thr_raw,
            nll_before=result["nll_before"],
            nll_after=result["nll_after"],
            val_sensitivity=val.value("sensitivity") if thr is not None else None,
            val_specificity=val.value("specificity") if thr is not None else None,
            method=result["method"],
        )
        bundle.save(d)
        reliability_diagram(summary, d / "reliability.png", title=f"{cfg.task} validation")
    return result
