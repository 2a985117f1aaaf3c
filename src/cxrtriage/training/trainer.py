"""Training loop: ``cxr train``.

One epoch = one pass over the training split (or, with the weighted sampler,
as many class-balanced draws). After every epoch the model is scored on the
validation split, ``history.csv`` and ``checkpoints/last.pt`` are written, and
the best epoch by the validation metric ``TrainConfig.select_metric`` (AUROC by
default) is kept. An interrupted run started again
with ``resume=True`` continues after its last finished epoch.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from cxrtriage.cards.training_plots import plot_history
from cxrtriage.config import SELECT_METRICS, ModelConfig, TrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.dataset import CachedDataset
from cxrtriage.data.discover import Sample, discover
from cxrtriage.data.split import dataset_root, train_val_from_samples
from cxrtriage.data.transforms import build_train_transform
from cxrtriage.inference.backend import TorchBackend, preprocessed_batches
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.operating_point import choose_threshold
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import save_model
from cxrtriage.models.registry import create_model, model_entry
from cxrtriage.tasks import get_task

__all__ = ["train", "TrainResult", "make_optimizer"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model_dir : Path
        Folder with ``config.json`` and ``model.pt`` of the best epoch.
    best_epoch : int
    val_metrics : MetricReport
        Validation metrics of the best epoch at the chosen threshold, with 95 % intervals.
    wall_seconds : float
        Wall time of this invocation (a resumed run counts only its own part;
        ``train_summary.json`` adds up all parts).
    skipped : list of (path, reason)
        Unreadable images that were reported and left out.
    """

    model_dir: Path
    best_epoch: int
    val_metrics: MetricReport
    wall_seconds: float
    skipped: list


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Build ``adamw`` / ``adam`` / ``sgd`` (Nesterov, momentum 0.9) / ``adagrad``.

    Raises
    ------
    ValueError
        Unknown optimizer name.
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose adamw, adam, sgd or adagrad")


def _val_probs(backend: TorchBackend, images: np.ndarray, image_size: int, intensity: str) -> np.ndarray:
    """Validation probabilities ``float64 (N, K)`` of cached ``uint8 (N, S, S)`` images (one forward pass)."""
    logits, _ = backend.run(preprocessed_batches(images, image_size, intensity, batch_size=64))
    return softmax(logits)


def _subset(samples: list[Sample], n: int | None, seed: int) -> list[Sample]:
    if not n or n >= len(samples):
        return samples
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        list(range(len(samples))), train_size=n, random_state=seed, stratify=[s.target for s in samples]
    )
    return [samples[i] for i in sorted(keep)]


def _write_history(history: list[dict], path: Path) -> None:
    if not history:
        return
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _lr_lambda(total_steps: int, warmup_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def train(
    cfg: TrainConfig,
    progress: bool = True,
    resume: bool = False,
    split: tuple[list[Sample], list[Sample]] | None = None,
) -> TrainResult:
    """Train a classifier and write it, with its history, to ``cfg.out``.

    Parameters
    ----------
    cfg : TrainConfig
        All settings (see its attributes).
    progress : bool
        Show tqdm progress bars.
    resume : bool
        Continue from ``cfg.out/checkpoints/last.pt`` if it exists (the saved
        run's settings are used; epochs may be raised).
    split : (train_samples, val_samples), optional
        Use these instead of discovering ``cfg.data`` and carving a
        patient-level validation split (cross-validation folds).

    Returns
    -------
    TrainResult

    Raises
    ------
    cxrtriage.data.DatasetError
        No usable images.
    ValueError
        Bad settings (unknown task, architecture, optimizer, rule).
    """
    t0 = time.time()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = ckpt_dir / "last.pt"
    state = None
    if resume and last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        saved = TrainConfig.from_dict(state["config"])
        saved.epochs = max(saved.epochs, cfg.epochs)
        cfg = saved
        log.info("resuming %s after epoch %d", out, state["epoch"])
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    torch.set_num_threads(cfg.threads)
    _seed_all(cfg.seed)
    task = get_task(cfg.task)
    if split is None:
        train_s, val_s = train_val_from_samples(discover(cfg.data, task), cfg.val_fraction, cfg.seed)
    else:
        train_s, val_s = list(split[0]), list(split[1])
    train_s = _subset(train_s, cfg.max_train_images, cfg.seed)
    paths = [s.path for s in train_s + val_s]
    cache = load_cached(paths, cfg.image_size, cfg.cache_dir, progress=progress)
    n_tr = len(train_s)
    targets_all = np.array([s.target for s in train_s + val_s])
    tr_rows = np.nonzero(cache.index < n_tr)[0]
    va_rows = np.nonzero(cache.index >= n_tr)[0]
    x_tr, y_tr = cache.images[tr_rows], targets_all[cache.index[tr_rows]]
    x_va, y_va = cache.images[va_rows], targets_all[cache.index[va_rows]]
    if len(np.unique(y_tr)) < 2 or len(np.unique(y_va)) < 2:
        raise ValueError(f"{cfg.data}: training and validation splits each need at least two classes")
    split_info = {
        "n_train": int(len(y_tr)),
        "n_val": int(len(y_va)),
        "train_counts": {c: int((y_tr == i).sum()) for i, c in enumerate(task.classes)},
        "val_counts": {c: int((y_va == i).sum()) for i, c in enumerate(task.classes)},
        "val_patients": len({s.patient_id for s in val_s}),
        "skipped": [list(f) for f in cache.failures],
    }
    rel = [os.path.relpath(s.path, dataset_root(cfg.data)) for s in val_s]
    (out / "split.json").write_text(
        json.dumps(
            {
                **split_info,
                "val_paths": [s.path for s in val_s],
                "data": cfg.data,
                "val_paths_relative": rel,
                "seed": cfg.seed,
            },
            indent=1,
        )
        + "\n"
    )
    for path, reason in cache.failures:
        print(f"skipped {path}: {reason}")

    train_tf = build_train_transform(cfg.intensity, cfg.hflip)
    counts = np.bincount(y_tr, minlength=task.num_classes).astype(np.float64)
    class_weights = None
    if cfg.balance == "loss":
        class_weights = torch.tensor(counts.sum() / (task.num_classes * np.maximum(counts, 1)), dtype=torch.float32)
    elif cfg.balance not in ("sampler", "none"):
        raise ValueError(f"unknown balance mode {cfg.balance!r}; choose sampler, loss or none")
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)

    model = create_model(cfg.arch, task.num_classes, pretrained=cfg.pretrained and model_entry(cfg.arch).has_pretrained)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    val_backend = TorchBackend(model, threads=None, channels_last=cfg.channels_last)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    steps_per_epoch = math.ceil(len(y_tr) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(cfg.epochs * steps_per_epoch, max(1, steps_per_epoch // 3))
    )
    if cfg.select_metric not in SELECT_METRICS:
        raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {cfg.select_metric!r}")
    history: list[dict] = []
    best = {"auroc": -1.0, "epoch": 0}  # "auroc" holds the score of select_metric (key kept for old checkpoints)
    start_epoch = 1
    elapsed_before = 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        elapsed_before = state.get("elapsed", 0.0)

    dataset = CachedDataset(x_tr, y_tr, train_tf)
    stale = start_epoch - 1 - best["epoch"] if best["epoch"] else 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stale >= cfg.patience:
            log.info("early stopping: no validation %s gain for %d epochs", cfg.select_metric, stale)
            break
        _seed_all(cfg.seed * 1000 + epoch)  # per-epoch seed: a resumed run draws the same batches
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        if cfg.balance == "sampler":
            weights = (1.0 / counts)[y_tr]
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights), num_samples=len(y_tr), replacement=True, generator=gen
            )
            loader = DataLoader(
                dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=len(y_tr) > cfg.batch_size
            )
        else:
            loader = DataLoader(
                dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=len(y_tr) > cfg.batch_size
            )
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = loader
        if progress:
            from tqdm import tqdm

            bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        for xb, yb in bar:
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            logits = model(xb)
            loss = criterion(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        probs = _val_probs(val_backend, x_va, cfg.image_size, cfg.intensity)
        val_loss = float(-np.log(np.clip(probs[np.arange(len(y_va)), y_va], 1e-12, None)).mean())
        epoch_report = metric_report(  # arg-max calls: the threshold is chosen only after the last epoch
            y_va, probs, task.classes, task=task.name, positive_class=task.positive_class or None, n_boot=0
        )
        val_auc = epoch_report.value("auroc")
        val_sens = epoch_report.value("macro_sensitivity")
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / max(1, seen), 6),
            "train_accuracy": round(correct / max(1, seen), 6),
            "val_loss": round(val_loss, 6),
            "val_accuracy": round(float(epoch_report.value("accuracy") or 0.0), 6),
            "val_auroc": round(val_auc, 6) if val_auc is not None else None,
            "val_macro_sensitivity": round(val_sens, 6) if val_sens is not None else None,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
        }
        history.append(row)
        selected = epoch_report.value(cfg.select_metric)
        score = selected if selected is not None else -row["val_loss"]
        if score > best["auroc"]:
            best = {"auroc": score, "epoch": epoch}
            _atomic_save(model.state_dict(), ckpt_dir / "best.pt")
            stale = 0
        else:
            stale += 1
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "config": cfg.to_dict(),
                "elapsed": elapsed_before + time.time() - t0,
            },
            last_path,
        )
        _write_history(history, out / "history.csv")
        print(
            f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} AUROC {row['val_auroc']} "
            f"macro sensitivity {row['val_macro_sensitivity']:.3f}",
            flush=True,
        )

    model.load_state_dict(torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=True))
    probs = _val_probs(val_backend, x_va, cfg.image_size, cfg.intensity)
    if task.is_binary:
        pos = task.positive_index
        threshold = choose_threshold((y_va == pos).astype(int), probs[:, pos], cfg.threshold_rule)
        rule = f"{cfg.threshold_rule} on the patient-level validation split"
    else:
        threshold, rule = None, "argmax"
    metrics = metric_report(
        y_va,
        probs,
        task.classes,
        task=task.name,
        positive_class=task.positive_class if task.is_binary else None,
        threshold=threshold,
        seed=cfg.seed,
    )
    wall = elapsed_before + time.time() - t0
    summary = {
        "best_epoch": best["epoch"],
        "select_metric": cfg.select_metric,
        "epochs_run": len(history),
        "wall_seconds": round(wall, 1),
        "split": {k: v for k, v in split_info.items() if k != "skipped"},
        "skipped": split_info["skipped"],
        "val_metrics": metrics.to_dict(),
    }
    mcfg = ModelConfig(
        arch=cfg.arch,
        task=task.name,
        classes=list(task.classes),
        image_size=cfg.image_size,
        intensity=cfg.intensity,
        threshold=threshold,
        threshold_rule=rule,
        positive_class=task.positive_class,
        version=f"{task.name}-{cfg.arch}-{cfg.image_size}px-seed{cfg.seed}",
        extra={"train_summary": {k: v for k, v in summary.items() if k != "skipped"}},
    )
    model = model.to(memory_format=torch.contiguous_format)
    save_model(out, model, mcfg)
    _write_history(history, out / "history.csv")
    plot_history(history, out)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return TrainResult(out, best["epoch"], metrics, wall, cache.failures)
