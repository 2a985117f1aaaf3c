"""Training loop: ``cxr train``.

One epoch = one pass over the training split (or, with the weighted sampler,
as many class-balanced draws). After every epoch the model is scored on the
validation split, ``history.csv`` and ``checkpoints/last.pt`` are written, and
the best epoch by the validation metric ``TrainConfig.select_metric`` (AUROC by
default) is kept. An interrupted run started again
with ``resume=True`` continues after its last finished epoch.

Device, precision and data-parallel training go through Lightning Fabric
(``TrainConfig.device``, ``precision``, ``devices``, ``strategy``); the optimiser
and the per-step cosine schedule come from timm (:mod:`cxrtriage.training.optim`).

Data-parallel training (``DistributedDataParallel``: gloo on CPUs, NCCL on GPUs) runs under ``torchrun``
(one or several nodes; Fabric picks up the launcher's environment) or with ``devices > 1`` on one node.
``batch_size`` is the global batch; :class:`cxrtriage.training.sampling.GlobalBatchSampler` splits every
global batch between the processes, keeping the class-balanced draw. Training loss and accuracy are summed
over the processes, validation is scored in shards and gathered; only the global rank 0 writes
checkpoints, history and the model folder. Checkpoints hold the full (unsharded) state, so ``resume`` works
with another number of processes. Batch normalisation uses the statistics of the global batch
(``SyncBatchNorm`` on GPUs, :func:`cxrtriage.training.global_bn.global_batchnorm` on CPUs). Dropout masks
are drawn per process, so a data-parallel run matches the single-process run closely, not bit for bit.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader

from cxrtriage.cards.training_plots import plot_history
from cxrtriage.config import BALANCE_MODES, RUNTIME_FIELDS, SELECT_METRICS, ModelConfig, TrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.dataset import CachedDataset
from cxrtriage.data.discover import Sample, discover
from cxrtriage.data.split import dataset_root, train_val_from_samples
from cxrtriage.data.transforms import build_train_transform
from cxrtriage.inference.backend import TorchBackend, preprocessed_batches
from cxrtriage.inference.device import fabric_device, resolve_device, resolve_precision
from cxrtriage.metrics.calibration import softmax
from cxrtriage.metrics.classification import metric_report
from cxrtriage.metrics.operating_point import choose_threshold
from cxrtriage.metrics.report import MetricReport
from cxrtriage.models.bundle import ModelBundle, SplitSection, TrainingSummary
from cxrtriage.models.registry import create_model, model_entry
from cxrtriage.tasks import get_task
from cxrtriage.training.aux import AuxHeadNet, aux_targets
from cxrtriage.training.global_bn import global_batchnorm
from cxrtriage.training.loop import rng_states, save_checkpoint, seed_all, set_rng_states, write_history
from cxrtriage.training.optim import build_optimizer, build_scheduler
from cxrtriage.training.sampling import GlobalBatchSampler, SeededItems

__all__ = ["train", "TrainResult", "make_fabric"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model_dir : Path
        Folder with the model bundle (``config.json``, ``model.safetensors``, ``bundle.json``) of the best epoch.
    best_epoch : int
    val_metrics : MetricReport
        Validation metrics of the best epoch at the chosen threshold, with 95 % intervals.
    wall_seconds : float
        Wall time of this invocation (a resumed run counts only its own part;
        the bundle's ``training`` section adds up all parts).
    skipped : list of (path, reason)
        Unreadable images that were reported and left out.
    """

    model_dir: Path
    best_epoch: int
    val_metrics: MetricReport
    wall_seconds: float
    skipped: list


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (torch elastic sets ``TORCHELASTIC_RUN_ID``)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_WORLD_SIZE" in os.environ


def make_fabric(cfg: TrainConfig) -> Fabric:
    """A launched Lightning Fabric for ``cfg.device``, ``cfg.precision``, ``cfg.devices`` and ``cfg.strategy``.

    Under ``torchrun`` the launcher's process counts win: ``devices`` = ``LOCAL_WORLD_SIZE``, nodes =
    ``WORLD_SIZE / LOCAL_WORLD_SIZE``, and strategy ``ddp`` when there is more than one process.
    ``torch.set_num_threads(cfg.threads)`` is applied after the launch (Fabric's launchers would otherwise
    divide the CPU cores between processes).

    Raises
    ------
    ValueError
        Fabric rejects the combination (e.g. ``16-mixed`` on CPU, ``cuda`` without a GPU).
    """
    try:
        accelerator, devices = fabric_device(cfg.device, cfg.devices)
        precision = resolve_precision(cfg.precision, resolve_device(cfg.device))
        strategy, num_nodes = cfg.strategy, 1
        if launched_by_torchrun():
            local, world = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"])
            devices = local if accelerator == "cpu" or isinstance(devices, int) else devices
            num_nodes = max(1, world // local)
            if world > 1 and strategy == "auto":
                strategy = "ddp"
        elif isinstance(devices, int) and devices > 1 and strategy == "auto":
            strategy = "ddp"
        fabric = Fabric(
            accelerator=accelerator,
            precision=cast(Any, precision),
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
        )
        fabric.launch()
    except (ValueError, RuntimeError, TypeError, MisconfigurationException) as exc:
        raise ValueError(
            f"cannot run on device={cfg.device!r}, precision={cfg.precision!r}, devices={cfg.devices}, "
            f"strategy={cfg.strategy!r}: {exc}"
        ) from exc
    torch.set_num_threads(cfg.threads)
    return fabric


def _val_probs(backend: TorchBackend, images: np.ndarray, image_size: int, intensity: str) -> np.ndarray:
    """Validation probabilities ``float64 (N, K)`` of cached ``uint8 (N, S, S)`` images (one forward pass)."""
    logits, _ = backend.run(preprocessed_batches(images, image_size, intensity, batch_size=64))
    return softmax(logits)


def _gathered_val_probs(
    fabric: Fabric, backend: TorchBackend, images: np.ndarray, image_size: int, intensity: str
) -> np.ndarray:
    """:func:`_val_probs` of all images, each process scoring one contiguous shard (gathered, input order)."""
    world = fabric.world_size
    if world == 1:
        return _val_probs(backend, images, image_size, intensity)
    shards = np.array_split(np.arange(len(images)), world)
    mine = shards[fabric.global_rank]
    longest = max(len(sh) for sh in shards)
    probs = _val_probs(backend, images[mine], image_size, intensity) if len(mine) else np.zeros((0, 0))
    k = probs.shape[1] if len(mine) else 0
    k = int(cast(torch.Tensor, fabric.all_reduce(torch.tensor(k), reduce_op="max")))
    padded = torch.zeros((longest, k), dtype=torch.float64)
    padded[: len(mine)] = torch.from_numpy(probs.reshape(len(mine), k))
    gathered = cast(torch.Tensor, fabric.all_gather(padded.to(fabric.device))).cpu().numpy()  # (world, longest, k)
    return np.concatenate([gathered[r, : len(sh)] for r, sh in enumerate(shards)])


def _subset(samples: list[Sample], n: int | None, seed: int) -> list[Sample]:
    if not n or n >= len(samples):
        return samples
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        list(range(len(samples))), train_size=n, random_state=seed, stratify=[s.target for s in samples]
    )
    return [samples[i] for i in sorted(keep)]


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
        run's settings are used; epochs may be raised; where it runs --
        :data:`cxrtriage.config.RUNTIME_FIELDS` -- comes from ``cfg``).
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
        Bad settings (unknown task, architecture, optimizer, rule, device or precision).
    """
    t0 = time.time()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path = ckpt_dir / "last.pt"
    resuming = resume and last_path.exists()
    if resuming:
        # the settings first (memory-mapped, tensors not read); the state is restored by fabric.load below
        saved = TrainConfig.from_dict(
            torch.load(last_path, map_location="cpu", weights_only=False, mmap=True)["config"]
        )
        saved.epochs = max(saved.epochs, cfg.epochs)
        for name in RUNTIME_FIELDS:
            setattr(saved, name, getattr(cfg, name))
        cfg = saved

    fabric = make_fabric(cfg)
    rank0 = fabric.is_global_zero
    progress = progress and rank0
    seed_all(cfg.seed)
    task = get_task(cfg.task)
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    if split is None:
        train_s, val_s = train_val_from_samples(discover(cfg.data, task), cfg.val_fraction, split_seed)
    else:
        train_s, val_s = list(split[0]), list(split[1])
    train_s = _subset(train_s, cfg.max_train_images, cfg.seed)
    paths = [s.path for s in train_s + val_s]
    node_leader = fabric.local_rank == 0
    if not node_leader:
        fabric.barrier()  # each node's local rank 0 decodes and writes the cache first; the others then read it
    cache = load_cached(paths, cfg.image_size, cfg.cache_dir, progress=progress)
    if node_leader:
        fabric.barrier()
    n_tr = len(train_s)
    targets_all = np.array([s.target for s in train_s + val_s])
    tr_rows = np.nonzero(cache.index < n_tr)[0]
    va_rows = np.nonzero(cache.index >= n_tr)[0]
    x_tr, y_tr = cache.images[tr_rows], targets_all[cache.index[tr_rows]]
    x_va, y_va = cache.images[va_rows], targets_all[cache.index[va_rows]]
    lung_fallbacks = 0
    if cfg.input != "full":  # the same lung step every inference path applies (cxrtriage.inference.lung_input)
        x_tr, n_tr_fb = _lung_step(x_tr, cfg.input)
        x_va, n_va_fb = _lung_step(x_va, cfg.input)
        lung_fallbacks = n_tr_fb + n_va_fb
        fabric.print(f"input {cfg.input}: lung segmentation failed on {lung_fallbacks} image(s), kept whole")
    if len(np.unique(y_tr)) < 2 or len(np.unique(y_va)) < 2:
        raise ValueError(f"{cfg.data}: training and validation splits each need at least two classes")
    skipped = [list(f) for f in cache.failures]
    split_section = SplitSection(
        data=cfg.data,
        seed=split_seed,
        n_train=int(len(y_tr)),
        n_val=int(len(y_va)),
        train_counts={c: int((y_tr == i).sum()) for i, c in enumerate(task.classes)},
        val_counts={c: int((y_va == i).sum()) for i, c in enumerate(task.classes)},
        val_paths_relative=[os.path.relpath(Path(s.path).resolve(), dataset_root(cfg.data)) for s in val_s],
        val_patients=len({s.patient_id for s in val_s}),
    )
    for path, reason in cache.failures:
        fabric.print(f"skipped {path}: {reason}")

    train_tf = build_train_transform(cfg.intensity, cfg.hflip, augment=cfg.augment, image_size=cfg.image_size)
    counts = np.bincount(y_tr, minlength=task.num_classes).astype(np.float64)
    y_cls = y_tr  # the task's class of each training image (y_tr gains an auxiliary column below)
    class_weights = None
    if cfg.balance == "loss":
        class_weights = torch.tensor(counts.sum() / (task.num_classes * np.maximum(counts, 1)), dtype=torch.float32)
    elif cfg.balance not in BALANCE_MODES:
        raise ValueError(f"unknown balance mode {cfg.balance!r}; choose from {', '.join(BALANCE_MODES)}")
    criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=cfg.label_smoothing)

    net = create_model(
        cfg.arch,
        task.num_classes,
        pretrained=cfg.pretrained and model_entry(cfg.arch).has_pretrained,
        drop_rate=cfg.drop_rate,
    )
    if fabric.world_size > 1 and fabric.device.type == "cuda":
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    elif fabric.world_size > 1:
        net = global_batchnorm(net)  # PyTorch's SyncBatchNorm is GPU-only
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    val_backend = TorchBackend(net, threads=None, channels_last=cfg.channels_last)
    model: nn.Module = net
    aux_criterion = None
    if cfg.aux_task:
        # targets (N, 2): the task's class and the finer task's class (-100 where the image has none)
        aux_task = get_task(cfg.aux_task)
        fine = aux_targets(train_s + val_s, cfg.data, aux_task)
        y_tr = np.stack([y_tr, fine[cache.index[tr_rows]]], axis=1)
        model = AuxHeadNet(net, aux_task.num_classes)
        aux_criterion = nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=cfg.label_smoothing)
    ema = None
    if cfg.ema_decay:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(net, decay=cfg.ema_decay, use_warmup=True)
        val_backend = TorchBackend(ema.module, threads=None, channels_last=cfg.channels_last)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, len(y_tr), cfg)
    t_initial = scheduler.t_initial  # of this invocation: raised epochs stretch the rest of a resumed schedule
    if cfg.compile:
        model = cast(nn.Module, torch.compile(model))
    model, optimizer = fabric.setup(model, optimizer)
    criterion = criterion.to(fabric.device)
    if ema is not None:
        ema.module.to(fabric.device)
    if cfg.select_metric not in SELECT_METRICS:
        raise ValueError(f"select_metric must be one of {SELECT_METRICS}, got {cfg.select_metric!r}")
    history: list[dict] = []
    best = {"auroc": -1.0, "epoch": 0}  # "auroc" holds the score of select_metric (key kept for old checkpoints)
    start_epoch = 1
    elapsed_before = 0.0
    num_updates = 0
    if resuming:
        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
        if ema is not None:
            state["ema"] = ema.module
        rest = fabric.load(last_path, state, strict=False, weights_only=False)
        history, best, start_epoch = rest["history"], rest["best"], rest["epoch"] + 1
        if rank0:
            write_history(history, out / "history.csv")  # drop a row whose epoch the checkpoint does not hold
        elapsed_before = rest.get("elapsed", 0.0)
        num_updates = rest.get("num_updates", 0)
        if "rng" in rest:
            set_rng_states(rest["rng"])
        scheduler.t_initial = t_initial
        scheduler.step_update(num_updates=num_updates)
        log.info("resuming %s after epoch %d", out, rest["epoch"])

    dataset = SeededItems(CachedDataset(x_tr, y_tr, train_tf))
    sample_weights = (1.0 / counts)[y_cls] if cfg.balance == "sampler" else None
    pin = fabric.device.type == "cuda"
    stale = start_epoch - 1 - best["epoch"] if best["epoch"] else 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        if stale >= cfg.patience:
            log.info("early stopping: no validation %s gain for %d epochs", cfg.select_metric, stale)
            break
        seed_all(cfg.seed * 1000 + epoch)  # per-epoch seed: a resumed run draws the same batches
        # a new sampler per epoch, its epoch fixed (Fabric's loader wrapper would reset a set_epoch to 0)
        sampler = GlobalBatchSampler(
            len(y_cls),
            cfg.batch_size,
            sample_weights,
            cfg.seed,
            rank=fabric.global_rank,
            world_size=fabric.world_size,
            epoch=epoch,
        )
        loader = DataLoader(
            dataset,
            batch_size=sampler.per_rank,
            sampler=sampler,
            num_workers=cfg.workers,
            pin_memory=pin,
            persistent_workers=False,
        )
        # the sampler already splits the data between processes: Fabric only moves batches to the device
        loader = cast(DataLoader, fabric.setup_dataloaders(loader, use_distributed_sampler=False))
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        bar: Any = loader
        if progress:
            from tqdm import tqdm

            bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", leave=False)
        for step, (xb, yb) in enumerate(bar):
            # the model's own randomness (dropout) per step and rank, whether items were built here or in workers
            torch.manual_seed(((cfg.seed * 1000 + epoch) * 100_003 + step) * 64 + fabric.global_rank)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if aux_criterion is not None:
                logits, aux_logits = model(xb)
                yb, yb_aux = yb[:, 0], yb[:, 1]
                loss = criterion(logits, yb) + cfg.aux_weight * aux_criterion(aux_logits, yb_aux)
            else:
                logits = model(xb)
                loss = criterion(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            num_updates += 1
            if ema is not None:
                ema.update(net, step=num_updates)
            scheduler.step_update(num_updates=num_updates)
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        totals = cast(
            torch.Tensor,
            fabric.all_reduce(
                torch.tensor([loss_sum, correct, seen], dtype=torch.float64, device=fabric.device), reduce_op="sum"
            ),
        )
        loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        probs = _gathered_val_probs(fabric, val_backend, x_va, cfg.image_size, cfg.intensity)
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
            save_checkpoint(fabric, {"model": ema.module if ema is not None else net}, ckpt_dir / "best.pt")
            stale = 0
        else:
            stale += 1
        if rank0:
            write_history(history, out / "history.csv")  # before last.pt: see write_history
        save_checkpoint(
            fabric,
            {
                "model": model,
                **({"ema": ema.module} if ema is not None else {}),
                "optimizer": optimizer,
                "scheduler": scheduler,
                "epoch": epoch,
                "num_updates": num_updates,
                "history": history,
                "best": best,
                "rng": rng_states(),
                "config": cfg.to_dict(),
                "elapsed": elapsed_before + time.time() - t0,
            },
            last_path,
        )
        fabric.print(
            f"epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_accuracy']:.3f} | "
            f"val loss {row['val_loss']:.4f} acc {row['val_accuracy']:.3f} AUROC {row['val_auroc']} "
            f"macro sensitivity {row['val_macro_sensitivity']:.3f}",
            flush=True,
        )

    fabric.load(ckpt_dir / "best.pt", {"model": net})
    val_backend = TorchBackend(net, threads=None, channels_last=cfg.channels_last)
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
    summary = TrainingSummary(
        best_epoch=int(best["epoch"]),
        select_metric=cfg.select_metric,
        epochs_run=len(history),
        wall_seconds=round(wall, 1),
        cpu_count=os.cpu_count(),
        skipped=skipped,
        runtime={
            "device": str(fabric.device),
            "precision": resolve_precision(cfg.precision, str(fabric.device)),
            "world_size": fabric.world_size,
            "strategy": type(fabric.strategy).__name__,
            "threads": torch.get_num_threads(),
            "channels_last": cfg.channels_last,
            "workers": cfg.workers,
            "compile": cfg.compile,
            **({"input": cfg.input, "lung_segmentation_fallbacks": lung_fallbacks} if cfg.input != "full" else {}),
        },
    )
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
        input=cfg.input,
        segmenter_sha256=_segmenter_sha256() if cfg.input != "full" else None,
    )
    net = net.cpu().to(memory_format=torch.contiguous_format)
    if isinstance(net, nn.Module) and fabric.world_size > 1 and fabric.device.type == "cuda":
        net = _plain_batchnorm(net)
    if rank0:
        ModelBundle(mcfg, train_config=cfg, training=summary, split=split_section).save(out, net)
        write_history(history, out / "history.csv")
        plot_history(history, out)
    fabric.barrier()
    return TrainResult(out, int(best["epoch"]), metrics, wall, cache.failures)


def _segmenter_sha256() -> str:
    """SHA-256 of the shipped lung segmenter's ``model.onnx``, the one :func:`_lung_step` draws the masks with."""
    from cxrtriage.segment.runtime import load_segmenter

    return load_segmenter().onnx_sha256


def _lung_step(images: np.ndarray, mode: str, chunk: int = 256) -> tuple[np.ndarray, int]:
    """``uint8 (N, S, S)`` after the lung step ``mode``, and how many images kept whole (failed segmentation)."""
    from cxrtriage.inference.lung_input import apply_lung_input

    parts, fallbacks = [], 0
    for start in range(0, len(images), chunk):
        res = apply_lung_input(np.asarray(images[start : start + chunk]), mode)
        parts.append(res.images)
        fallbacks += sum(res.fallback)
    return (np.concatenate(parts) if parts else np.asarray(images)), fallbacks


def _plain_batchnorm(module: nn.Module) -> nn.Module:
    """Replace ``SyncBatchNorm`` layers by ``BatchNorm2d`` with the same state (the saved model runs anywhere)."""
    if isinstance(module, nn.SyncBatchNorm):
        bn = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        bn.load_state_dict(module.state_dict())
        return bn
    for name, child in module.named_children():
        setattr(module, name, _plain_batchnorm(child))
    return module
