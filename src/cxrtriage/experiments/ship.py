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
6. The bundle files are copied into the model folder (no checkpoints); the card
   (``README.md``) is rendered from the bundle.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxrtriage.cards.model_card import write_card
from cxrtriage.config import ModelConfig, TrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.split import dataset_root, patient_train_val_split
from cxrtriage.experiments.cv import CVDataset, build_cv_dataset
from cxrtriage.experiments.external import external_validations
from cxrtriage.experiments.recalibrate import calibrate_model_dir, validation_logits
from cxrtriage.experiments.subgroups import subgroup_metrics
from cxrtriage.inference.backend import TorchBackend, config_batches
from cxrtriage.metrics.calibration import brier_score, expected_calibration_error, softmax
from cxrtriage.metrics.classification import report_at_operating_point
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import (
    BUNDLE_JSON,
    CONFIG_JSON,
    WEIGHTS_FILE,
    Evaluation,
    ModelBundle,
)
from cxrtriage.tasks import get_task

__all__ = ["ship_model", "document_model", "SHIPPED_FILES"]

#: Files copied from the run folder into the shipped model folder.
SHIPPED_FILES = (
    CONFIG_JSON,
    WEIGHTS_FILE,
    BUNDLE_JSON,
    "reliability.png",
    "history.csv",
    "curve_auroc.png",
    "curve_loss.png",
)


def _split(
    ds: CVDataset, test_fraction: float, val_fraction: float, seed: int, resplit: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, int]:
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
    cfg: ModelConfig, y: np.ndarray, logits: np.ndarray, n_boot: int, seed: int
) -> tuple[MetricReport, np.ndarray]:
    """Report at the model's temperature and operating point, and the calibrated probabilities ``float64 (N, K)``."""
    p = softmax(logits, cfg.temperature)
    return report_at_operating_point(y, p, cfg, n_boot=n_boot, seed=seed), p


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
    external: Sequence[str | Path] = (),
) -> ModelBundle:
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
    external : sequence of paths
        External validation datasets (other sources), scored at the saved operating point
        and stored in ``evaluation.external`` (:mod:`cxrtriage.experiments.external`).

    Returns
    -------
    ModelBundle
        The shipped bundle in ``out`` (its card rendered to ``README.md``).
    """
    t0 = time.time()
    task = get_task(cfg.task)
    ds = build_cv_dataset([cfg.data], task, link=link, include_test=True, cache_dir=cfg.cache_dir, progress=progress)
    tr, va, te, how, dropped = _split(ds, test_fraction, cfg.val_fraction, cfg.seed, resplit)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    from cxrtriage.training.trainer import train

    train(cfg, progress=progress, split=([ds.samples[i] for i in tr], [ds.samples[i] for i in va]))
    calibrate_model_dir(run, cfg.data, cfg.threshold_rule, cache_dir=cfg.cache_dir)
    bundle = ModelBundle.load(run)
    model, mcfg = bundle.load_model(), bundle.config
    # validation metrics at the saved operating point
    v_logits, v_y, _ = validation_logits(run, cfg.data, cfg.cache_dir)
    val_m, _ = _metrics(mcfg, v_y, v_logits, n_boot, cfg.seed)
    # held-out test
    test_s = [ds.samples[i] for i in te]
    cache = load_cached([s.path for s in test_s], mcfg.image_size, cfg.cache_dir)
    test_s = [test_s[i] for i in cache.index]
    t_y = np.array([s.target for s in test_s])
    t_logits, _ = TorchBackend(model, mcfg, threads=None).run(config_batches(cache.images, mcfg, 64))
    test_m, t_p = _metrics(mcfg, t_y, t_logits, n_boot, cfg.seed)
    subgroups = {c: subgroup_metrics(test_s, t_p, mcfg, c, n_boot=n_boot, seed=cfg.seed) for c in by}
    if bundle.calibration is None or bundle.split is None or bundle.training is None:
        raise ValueError(f"{bundle.directory}: calibrated bundle lacks its calibration, split or training section")
    bundle.calibration.test_ece_before = expected_calibration_error(softmax(t_logits), t_y)
    bundle.calibration.test_ece_after = expected_calibration_error(t_p, t_y)
    bundle.calibration.test_brier_before = brier_score(softmax(t_logits), t_y)
    bundle.calibration.test_brier_after = brier_score(t_p, t_y)
    d = ds.dedupe or {}
    sp = bundle.split
    sp.description = f"held-out test = {how}; validation = group-wise stratified {cfg.val_fraction:.0%} of the rest"
    sp.n_test = int(len(test_s))
    sp.test_counts = {c: int((t_y == j).sum()) for j, c in enumerate(task.classes)}
    sp.test_paths_relative = [os.path.relpath(Path(s.path).resolve(), dataset_root(cfg.data)) for s in test_s]
    sp.dropped_leaking_test_images = dropped
    sp.leak_control = (
        f"groups = patient ids joined with duplicate images (dHash <= {d.get('max_distance')} bits or equal pixels): "
        f"{d.get('n_images')} images, {d.get('n_patients')} patient ids → {d.get('n_groups')} groups; "
        f"{d.get('within_pairs')} duplicate pairs inside the set; copies in reference sets {d.get('reference_pairs')}"
    )
    bundle.training.total_seconds = round(time.time() - t0, 1)
    bundle.evaluation = Evaluation(
        validation=val_m,
        test=test_m,
        subgroups=subgroups,
        command=command or " ".join(sys.argv),
        link=[str(x) for x in link],
    )
    bundle.save(run)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, out / name)
    shipped = ModelBundle.load(out)
    if external and shipped.evaluation is not None:
        shipped.evaluation.external = external_validations(out, external, n_boot, cfg.cache_dir, progress, cfg.seed)
        shipped.save(out)
    write_card(shipped)
    return shipped


def document_model(
    model_dir: str | Path,
    command: str,
    n_boot: int = 1000,
    cache_dir: str | None = None,
    external: Sequence[str | Path] = (),
) -> ModelBundle:
    """Render the model card (``README.md``) of a model folder trained by ``cxr train`` (no held-out test).

    The validation metrics are recomputed from the folder's validation images
    (the bundle's ``split`` section) with the saved temperature and operating point,
    so the card states what the shipped files do; they are stored in the bundle's
    ``evaluation`` section and the card is rendered from the bundle.

    Parameters
    ----------
    model_dir : path
        Model bundle folder with the sections ``train_config``, ``training``, ``split``
        and ``calibration`` (from ``cxr calibrate``).
    command : str
        The exact command that trained the model.
    n_boot : int
        Bootstrap replicates for the 95 % intervals.
    cache_dir : path, optional
        Decoded-image cache.
    external : sequence of paths
        External validation datasets, scored at the saved operating point and stored in
        ``evaluation.external``; entries already in the bundle are kept unless re-scored by name.

    Returns
    -------
    ModelBundle
        The updated bundle (saved; its card written to ``README.md``).

    Raises
    ------
    FileNotFoundError
        A required section is missing (``calibration``: run ``cxr calibrate`` first).
    """
    d = Path(model_dir)
    bundle = ModelBundle.load(d)
    for name in ("train_config", "training", "split", "calibration"):
        if getattr(bundle, name) is None:
            hint = " (run `cxr calibrate --model DIR` first)" if name == "calibration" else ""
            raise FileNotFoundError(f"{d}: bundle.json has no {name} section{hint}")
    cfg, sp = bundle.train_config, bundle.split
    if cfg is None or sp is None:  # checked above; narrows the types
        raise FileNotFoundError(f"{d}: bundle.json has no train_config or split section")
    v_logits, v_y, _ = validation_logits(d, cfg.data, cache_dir)
    val_m, _ = _metrics(bundle.config, v_y, v_logits, n_boot, cfg.seed)
    sp.description = (
        f"validation = patient-level stratified {cfg.val_fraction:.0%} of the training data "
        "(scikit-learn StratifiedGroupKFold); no held-out test in this card (the dataset's own test split is held "
        "back for independent evaluation)"
    )
    sp.leak_control = (
        f"groups = patient ids from the file names ({sp.val_patients} validation patients, none of them in training)"
    )
    kept = bundle.evaluation.external if bundle.evaluation is not None else []
    new = external_validations(d, external, n_boot, cache_dir, seed=cfg.seed) if external else []
    names = {e.name for e in new}
    bundle.evaluation = Evaluation(
        validation=val_m, test=None, command=command, external=[e for e in kept if e.name not in names] + new
    )
    bundle.save(d)
    write_card(bundle)
    return bundle
