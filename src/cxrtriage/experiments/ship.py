"""``cxr ship``: build a shippable model folder with calibration, held-out test and model card.

Steps, all with leak-free groups (patients and duplicate images,
:func:`cxrtriage.data.dedupe.leak_free_groups`):

1. Held-out test: the dataset's ``test`` split if it has one (images whose
   group also occurs outside it are dropped and counted), else (or with
   ``resplit``) a group-wise stratified ``test_fraction`` of the images.
2. Validation: a group-wise stratified ``val_fraction`` of the rest; the rest trains.
3. Training (:func:`cxrtriage.training.trainer.train`) with the best epoch
   chosen on validation.
4. ``cxr calibrate``: temperature and operating point on validation
   (:func:`cxrtriage.experiments.recalibrate.calibrate_model_dir`).
5. Validation and test metrics with 95 % bootstrap intervals at the saved
   operating point; optional subgroup tables on test; model card.
6. The inference files are copied into the model folder (no checkpoints).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrtriage.cards.model_card import build_card, write_model_card
from cxrtriage.cards.tables import write_json
from cxrtriage.config import ModelConfig, TrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.split import dataset_root, patient_train_val_split
from cxrtriage.experiments.cv import build_cv_dataset
from cxrtriage.experiments.recalibrate import calibrate_model_dir, validation_logits
from cxrtriage.experiments.subgroups import subgroup_metrics
from cxrtriage.inference.backend import TorchBackend, config_batches
from cxrtriage.metrics.calibration import brier_score, expected_calibration_error, softmax
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import load_model
from cxrtriage.tasks import TaskSpec, get_task

__all__ = ["ship_model", "document_model", "SHIPPED_FILES"]

#: Files copied from the run folder into the shipped model folder.
SHIPPED_FILES = (
    "config.json",
    "model.pt",
    "calibration.json",
    "reliability.png",
    "split.json",
    "train_config.json",
    "history.csv",
    "train_summary.json",
    "holdout.json",
    "curve_auroc.png",
    "curve_loss.png",
)


def _split(ds, test_fraction: float, val_fraction: float, seed: int, resplit: bool = False):
    y = ds.targets
    g = np.asarray(ds.groups)
    is_test = np.array([s.split == "test" and not resplit for s in ds.samples], dtype=bool)
    dropped = 0
    if is_test.any():
        outside = set(g[~is_test])
        leak = is_test & np.isin(g, list(outside))
        dropped = int(leak.sum())
        test = np.nonzero(is_test & ~leak)[0]
        rest = np.nonzero(~is_test)[0]
        how = f"the dataset's own test split ({dropped} test images dropped because their patient/duplicate group also occurs in training or validation)"
    else:
        rest_pos, test_pos = patient_train_val_split(y, g, test_fraction, seed)
        test, rest = np.sort(test_pos), np.sort(rest_pos)
        how = f"a group-wise stratified {test_fraction:.0%} held-out test split" + (
            " of all images (the dataset's own split was not patient-level and was ignored)" if resplit else ""
        )
    tr, va = patient_train_val_split(y[rest], g[rest], val_fraction, seed)
    return rest[tr], rest[va], test, how, dropped


def _metrics(
    task: TaskSpec, cfg: ModelConfig, y: np.ndarray, logits: np.ndarray, n_boot: int, seed: int
) -> tuple[MetricReport, np.ndarray]:
    """Report at the model's temperature and operating point, and the calibrated probabilities ``float64 (N, K)``."""
    p = softmax(logits, cfg.temperature)
    rep = metric_report(
        y,
        p,
        task.classes,
        task=task.name,
        positive_class=cfg.positive_class if task.is_binary else None,
        threshold=cfg.threshold if task.is_binary else None,
        n_boot=n_boot,
        seed=seed,
    )
    return rep, p


def card_metrics(rep: MetricReport) -> dict:
    """The model card's metric block: ``{name: {"value", "ci95"}}`` plus ``n_boot``.

    Headline metrics, and for multi-class tasks the per-class sensitivities as
    ``sensitivity_<class>``.
    """
    out = {k: v.to_dict() for k, v in rep.metrics.items()}
    if not rep.is_binary:
        out.update({f"sensitivity_{c}": m["sensitivity"].to_dict() for c, m in rep.per_class.items()})
    out["n_boot"] = rep.n_boot
    return out


def ship_model(
    cfg: TrainConfig,
    out: str | Path,
    link: Sequence[str | Path] = (),
    test_fraction: float = 0.15,
    by: Sequence[str] = (),
    n_boot: int = 1000,
    progress: bool = False,
    command: str | None = None,
    resplit: bool = False,
) -> dict:
    """Train, calibrate, test and document a model; write it to ``out``.

    Parameters
    ----------
    cfg : TrainConfig
        ``cfg.out`` is the working run folder (checkpoints, curves);
        ``cfg.val_fraction`` the validation share; ``cfg.threshold_rule`` the
        operating-point rule.
    out : path
        The shipped model folder (e.g. ``src/cxrtriage/zoo/covid-efficientnet_lite0``).
    link : sequence of paths
        Reference datasets for duplicate linking (see :func:`cxrtriage.experiments.cv.build_cv_dataset`).
    test_fraction : float
        Held-out share when the dataset has no ``test`` split.
    by : sequence of str
        Subgroup columns reported on the test split.
    resplit : bool
        Ignore the dataset's own ``test`` split and carve a group-wise test
        split from all images (for splits that were not made by patient).
    n_boot : int
    progress : bool
    command : str, optional

    Returns
    -------
    dict
        The model card.
    """
    t0 = time.time()
    task = get_task(cfg.task)
    ds = build_cv_dataset([cfg.data], task, link=link, include_test=True, cache_dir=cfg.cache_dir, progress=progress)
    tr, va, te, how, dropped = _split(ds, test_fraction, cfg.val_fraction, cfg.seed, resplit)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    from cxrtriage.training.trainer import train

    res = train(cfg, progress=progress, split=([ds.samples[i] for i in tr], [ds.samples[i] for i in va]))
    cal = calibrate_model_dir(run, cfg.data, cfg.threshold_rule, cache_dir=cfg.cache_dir)
    model, mcfg = load_model(run)
    # validation metrics at the saved operating point
    v_logits, v_y, _ = validation_logits(run, cfg.data, cfg.cache_dir)
    val_rep, _ = _metrics(task, mcfg, v_y, v_logits, n_boot, cfg.seed)
    # held-out test
    test_s = [ds.samples[i] for i in te]
    cache = load_cached([s.path for s in test_s], mcfg.image_size, cfg.cache_dir)
    test_s = [test_s[i] for i in cache.index]
    t_y = np.array([s.target for s in test_s])
    t_logits, _ = TorchBackend(model, mcfg, threads=None).run(config_batches(cache.images, mcfg, 64))
    test_rep, t_p = _metrics(task, mcfg, t_y, t_logits, n_boot, cfg.seed)
    subgroups = {c: subgroup_metrics(test_s, t_p, mcfg, c, n_boot=n_boot, seed=cfg.seed) for c in by}
    holdout = {
        "description": how,
        "dropped_leaking_test_images": dropped,
        "test_paths": [s.path for s in test_s],
        "data": cfg.data,
        "test_paths_relative": [os.path.relpath(s.path, dataset_root(cfg.data)) for s in test_s],
        "metrics": test_rep.to_dict(),
        "ece_before": expected_calibration_error(softmax(t_logits), t_y),
        "ece_after": expected_calibration_error(t_p, t_y),
        "brier_before": brier_score(softmax(t_logits), t_y),
        "brier_after": brier_score(t_p, t_y),
        "subgroups": subgroups,
    }
    write_json(holdout, run / "holdout.json")
    summary = json.loads((run / "train_summary.json").read_text())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    counts = lambda idx: {c: int((ds.targets[idx] == j).sum()) for j, c in enumerate(task.classes)}  # noqa: E731
    d = ds.dedupe or {}
    split = {
        "seed": cfg.seed,
        "description": f"held-out test = {how}; validation = group-wise stratified {cfg.val_fraction:.0%} of the rest",
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "n_test": int(len(test_s)),
        "train_counts": counts(tr),
        "val_counts": counts(va),
        "test_counts": {c: int((t_y == j).sum()) for j, c in enumerate(task.classes)},
        "leak_control": f"groups = patient ids joined with duplicate images (dHash <= {d.get('max_distance')} bits or equal pixels): "
        f"{d.get('n_images')} images, {d.get('n_patients')} patient ids → {d.get('n_groups')} groups; "
        f"{d.get('within_pairs')} duplicate pairs inside the set; copies in reference sets {d.get('reference_pairs')}",
    }
    card = build_card(
        out,
        cfg,
        mcfg,
        cal,
        card_metrics(val_rep),
        split,
        best_epoch=res.best_epoch,
        train_seconds=summary["wall_seconds"],
        total_seconds=time.time() - t0,
        command=command or " ".join(sys.argv),
        link=link,
        test=card_metrics(test_rep),
        holdout=holdout,
        subgroups=subgroups,
    )
    write_model_card(out, card)
    return card


def document_model(model_dir: str | Path, command: str, n_boot: int = 1000, cache_dir: str | None = None) -> dict:
    """Write the model card of a model folder trained by ``cxr train`` (no held-out test).

    The validation metrics are recomputed from the folder's validation images
    (``split.json``) with the saved temperature and operating point, so the card
    states what the shipped files do.

    Parameters
    ----------
    model_dir : path
        Folder with ``config.json``, ``model.pt``, ``split.json``, ``train_config.json``,
        ``train_summary.json`` and ``calibration.json`` (from ``cxr calibrate``).
    command : str
        The exact command that trained the model.
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    cache_dir : path, optional
        Decoded-image cache.

    Returns
    -------
    dict
        The model card (also written as ``model_card.json`` and ``model_card.md``).

    Raises
    ------
    FileNotFoundError
        A required file is missing (``calibration.json``: run ``cxr calibrate`` first).
    """
    d = Path(model_dir)
    for name in ("train_config.json", "train_summary.json", "calibration.json"):
        if not (d / name).is_file():
            hint = " (run `cxr calibrate --model DIR` first)" if name == "calibration.json" else ""
            raise FileNotFoundError(f"{d}: {name} missing{hint}")
    cfg = TrainConfig.from_dict(json.loads((d / "train_config.json").read_text()))
    summary = json.loads((d / "train_summary.json").read_text())
    cal = json.loads((d / "calibration.json").read_text())
    task = get_task(cfg.task)
    mcfg = ModelConfig.load(d / "config.json")
    v_logits, v_y, _ = validation_logits(d, cfg.data, cache_dir)
    val_rep, _ = _metrics(task, mcfg, v_y, v_logits, n_boot, cfg.seed)
    sp = summary["split"]
    split = {
        "seed": cfg.seed,
        "description": f"validation = patient-level stratified {cfg.val_fraction:.0%} of the training data "
        "(scikit-learn StratifiedGroupKFold); no held-out test in this card (the dataset's own test split is held "
        "back for independent evaluation)",
        "n_train": sp["n_train"],
        "n_val": sp["n_val"],
        "n_test": None,
        "train_counts": sp["train_counts"],
        "val_counts": sp["val_counts"],
        "test_counts": None,
        "leak_control": f"groups = patient ids from the file names ({sp.get('val_patients')} validation patients, "
        "none of them in training)",
    }
    card = build_card(
        d,
        cfg,
        mcfg,
        cal,
        card_metrics(val_rep),
        split,
        best_epoch=summary["best_epoch"],
        train_seconds=summary["wall_seconds"],
        total_seconds=None,
        command=command,
    )
    write_model_card(d, card)
    return card
