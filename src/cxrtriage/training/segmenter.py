"""Training the lung segmenter: ``cxr train-segmenter``.

The network is a segmentation-models-pytorch U-Net with an EfficientNet-Lite0 encoder initialised from the
packaged ImageNet weights (:mod:`cxrtriage.segment.network`); the loss is MONAI's ``DiceCELoss`` (soft Dice +
binary cross-entropy on the logits); image and mask are augmented together by MONAI dictionary transforms
(affine warp with the same matrix for both, then intensity changes of the image only: gamma, blur,
noise, brightness/contrast). Epochs, checkpoints, resume and early stopping come from
:func:`cxrtriage.training.loop.fit`. The validation split is patient-level (Kermany file names identify the
patient) and the selection metric is the mean per-image Dice at the masks' own resolution.

Data: a folder with ``manifest.csv`` holding ``image`` and ``mask`` columns (paths relative to the folder) and
optionally ``label`` (stratifies the split), e.g. ``shared/data/lung-masks`` (5,216 Kermany train images).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from cxrtriage.config import SegmenterConfig, SegmenterTrainConfig
from cxrtriage.data.cache import load_cached
from cxrtriage.data.discover import DatasetError
from cxrtriage.data.io import read_image
from cxrtriage.data.patients import patient_id_from_filename
from cxrtriage.data.split import patient_train_val_split
from cxrtriage.data.transforms import normalize_intensity
from cxrtriage.segment.bundle import SegmenterBundle
from cxrtriage.segment.postprocess import dice_scores
from cxrtriage.training.loop import fit
from cxrtriage.training.optim import build_optimizer, build_scheduler
from cxrtriage.training.trainer import make_fabric

__all__ = ["MaskPair", "read_mask_manifest", "train_segmenter", "build_segment_augment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MaskPair:
    """One training image and its lung mask (absolute paths), with the patient and the label."""

    image: str
    mask: str
    patient_id: str
    label: str


def read_mask_manifest(data: str | Path) -> list[MaskPair]:
    """Read ``DATA/manifest.csv`` (columns ``image``, ``mask``, optional ``label`` and ``patient_id``).

    Returns
    -------
    list of MaskPair
        Paths resolved against ``DATA``; ``patient_id`` from its column or the Kermany file name.

    Raises
    ------
    DatasetError
        No manifest, or it lacks ``image`` / ``mask`` columns, or it lists nothing.
    """
    root = Path(data)
    manifest = root / "manifest.csv" if root.is_dir() else root
    root = manifest.parent
    if not manifest.is_file():
        raise DatasetError(f"{manifest}: no mask manifest (manifest.csv with image and mask columns)")
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise DatasetError(f"{manifest}: needs columns 'image' and 'mask' and at least one row")
    return [
        MaskPair(
            image=str((root / r["image"]).resolve()),
            mask=str((root / r["mask"]).resolve()),
            patient_id=r.get("patient_id") or patient_id_from_filename(r["image"]),
            label=r.get("label", ""),
        )
        for r in rows
    ]


def build_segment_augment(image_size: int, seed: int, strength: str = "standard") -> Any:
    """MONAI dictionary transforms for ``{"image": (1, S, S) float in [0, 1], "mask": (1, S, S) float in [0, 1]}``.

    ``standard``: the affine warp (rotation up to 10 degrees, scale 0.8-1.2, shift up to 8 %, shear 0.05) applies
    one matrix to both keys (bilinear for both: the mask stays a soft target); the intensity transforms (gamma
    0.6-1.7, Gaussian blur sigma up to 2 px, noise, brightness/contrast) touch the image only. ``mild`` halves
    the warp ranges and the intensity ranges and probabilities (for fine-tuning).

    Raises
    ------
    ValueError
        ``strength`` is not ``standard`` or ``mild``.
    """
    from monai import transforms as mt

    if strength not in ("standard", "mild"):
        raise ValueError(f"augment strength {strength!r}: expected 'standard' or 'mild'")
    k = 1.0 if strength == "standard" else 0.5
    keys = ["image", "mask"]
    shift = 0.08 * k * image_size
    aug = mt.Compose(
        [
            mt.RandAffined(
                keys=keys,
                prob=0.8 * k,
                rotate_range=(np.deg2rad(10.0 * k),),
                scale_range=(0.2 * k, 0.2 * k),
                translate_range=(shift, shift),
                shear_range=(0.05 * k, 0.05 * k),
                mode=("bilinear", "bilinear"),
                padding_mode="zeros",
            ),
            mt.RandAdjustContrastd(keys=["image"], prob=0.4 * k, gamma=(1.0 - 0.4 * k, 1.0 + 0.7 * k)),
            # blur up to sigma 2 px also stands in for low-resolution sources (MONAI's
            # RandSimulateLowResolution is 3-D only); e.g. the NIH 64 px images upsampled to the input size
            mt.RandGaussianSmoothd(keys=["image"], prob=0.35 * k, sigma_x=(0.3, 2.0 * k), sigma_y=(0.3, 2.0 * k)),
            mt.RandGaussianNoised(keys=["image"], prob=0.2 * k, std=0.04 * k),
            mt.RandScaleIntensityd(keys=["image"], factors=0.2 * k, prob=0.3 * k),
            mt.RandShiftIntensityd(keys=["image"], offsets=0.1 * k, prob=0.3 * k),
        ]
    )
    aug.set_random_state(seed)
    return aug


class _PairDataset(Dataset):
    """Cached ``uint8`` images and masks -> augmented, standardised tensors (image ``(1, S, S)``, mask ``(1, S, S)``)."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, augment: Any, mean: float, std: float) -> None:
        self.images, self.masks, self.augment, self.mean, self.std = images, masks, augment, mean, std

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = {
            "image": torch.from_numpy(self.images[i].astype(np.float32) / 255.0)[None],
            "mask": torch.from_numpy(self.masks[i].astype(np.float32) / 255.0)[None],
        }
        if self.augment is not None:
            item = self.augment(item)
        image = torch.as_tensor(item["image"]).float().clamp(0.0, 1.0)
        mask = torch.as_tensor(item["mask"]).float().clamp(0.0, 1.0)
        return (image - self.mean) / self.std, mask


def _predict_logits(net: torch.nn.Module, x: np.ndarray, device: torch.device, batch: int = 64) -> torch.Tensor:
    outs = []
    for i in range(0, len(x), batch):
        outs.append(net(torch.from_numpy(x[i : i + batch]).to(device)).float().cpu())
    return torch.cat(outs)


def _standardise(images: np.ndarray, intensity: str, mean: float, std: float) -> np.ndarray:
    x = np.stack([normalize_intensity(np.ascontiguousarray(im), intensity) for im in images])
    return ((x.astype(np.float32) / 255.0 - mean) / std)[:, None]


def train_segmenter(cfg: SegmenterTrainConfig, progress: bool = True, resume: bool = False) -> Path:
    """Train a lung segmenter and write its bundle (:class:`cxrtriage.segment.bundle.SegmenterBundle`) to ``cfg.out``.

    Parameters
    ----------
    cfg : SegmenterTrainConfig
    progress : bool
        Show tqdm bars.
    resume : bool
        Continue from ``cfg.out/checkpoints/last.pt`` when it exists.

    Returns
    -------
    Path
        ``cfg.out`` (``config.json``, ``model.safetensors``, ``model.onnx``, ``bundle.json``, ``history.csv``).

    Raises
    ------
    DatasetError
        Unusable manifest, or fewer than two patients with a readable image and mask.
    ValueError
        Bad settings (optimizer, device, precision), or ``cfg.init`` holds another architecture or was trained
        with another validation split. A ``cfg.init`` of the same architecture with other decoder widths
        passes on its encoder only (the decoder starts fresh; ``bundle.json`` says ``init_part``).
    """
    from monai.losses import DiceCELoss

    from cxrtriage.segment.network import build_segmenter_net, count_parameters

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = read_mask_manifest(cfg.data)
    fabric = make_fabric(cfg)  # type: ignore[arg-type]
    seg_cfg = SegmenterConfig(image_size=cfg.image_size, intensity=cfg.intensity, decoder_channels=cfg.decoder_widths)
    s = cfg.image_size
    init_training: dict[str, Any] | None = None
    init_part = "network"
    if cfg.init:
        start = SegmenterBundle.load(cfg.init)
        if start.config.arch != seg_cfg.arch:
            raise ValueError(f"{cfg.init}: network {start.config.arch} differs from {seg_cfg.arch}")
        net = start.torch_model(cfg.init)
        if list(start.config.decoder_channels) != seg_cfg.decoder_channels:
            # another decoder: only the encoder carries over, the decoder and head start fresh
            encoder = cast(torch.nn.Module, net.encoder).state_dict()
            net = build_segmenter_net(seg_cfg.arch, seg_cfg.decoder_channels, pretrained=False)
            cast(torch.nn.Module, net.encoder).load_state_dict(encoder)
            init_part = "encoder"
        init_training = dict(start.training)
    else:
        net = build_segmenter_net(seg_cfg.arch, seg_cfg.decoder_channels, pretrained=cfg.pretrained)
    imgs = load_cached([p.image for p in pairs], s, cfg.cache_dir, progress=progress)
    msks = load_cached([p.mask for p in pairs], s, cfg.cache_dir, progress=progress)
    ok_img, ok_msk = set(imgs.index.tolist()), set(msks.index.tolist())
    failures = list(imgs.failures) + list(msks.failures)
    for path, reason in failures:
        fabric.print(f"skipped {path}: {reason}")
    usable = sorted(ok_img & ok_msk)
    if len({pairs[i].patient_id for i in usable}) < 2:
        raise DatasetError(f"{cfg.data}: fewer than two patients with a readable image and mask")
    img_row = {int(k): r for r, k in enumerate(imgs.index)}
    msk_row = {int(k): r for r, k in enumerate(msks.index)}
    labels = sorted({pairs[i].label for i in usable})
    targets = [labels.index(pairs[i].label) for i in usable]
    tr_idx, va_idx = patient_train_val_split(targets, [pairs[i].patient_id for i in usable], cfg.val_fraction, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.max_train_images is not None and cfg.max_train_images < len(tr_idx):
        tr_idx = np.sort(rng.choice(tr_idx, cfg.max_train_images, replace=False))
    if cfg.max_val_images is not None and cfg.max_val_images < len(va_idx):
        va_idx = np.sort(rng.choice(va_idx, cfg.max_val_images, replace=False))
    tr = [usable[i] for i in tr_idx]
    va = [usable[i] for i in va_idx]
    root = Path(cfg.data) if Path(cfg.data).is_dir() else Path(cfg.data).parent
    val_relative = [os.path.relpath(pairs[i].image, root.resolve()) for i in va]
    if init_training is not None and init_training.get("val_images_relative") is not None:
        if not set(val_relative) <= set(init_training["val_images_relative"]):
            raise ValueError(
                f"{cfg.init}: trained with another validation split (seed or data differ); "
                "fine-tuning from it would train on this run's validation images"
            )
    x_tr = np.stack([normalize_intensity(np.ascontiguousarray(imgs.images[img_row[i]]), cfg.intensity) for i in tr])
    m_tr = np.stack([np.asarray(msks.images[msk_row[i]]) for i in tr])
    x_va = _standardise(np.stack([imgs.images[img_row[i]] for i in va]), cfg.intensity, seg_cfg.mean, seg_cfg.std)
    # validation Dice against the masks at their own resolution
    m_va = [read_image(pairs[i].mask) > 127 for i in va]

    net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net, cfg)  # type: ignore[arg-type]
    scheduler = build_scheduler(optimizer, len(tr), cfg)  # type: ignore[arg-type]
    model, optimizer = fabric.setup(net, optimizer)
    loss_fn = DiceCELoss(sigmoid=True, batch=False)
    dataset = _PairDataset(x_tr, m_tr, build_segment_augment(s, cfg.seed, cfg.augment), seg_cfg.mean, seg_cfg.std)

    def epoch_batches(epoch: int) -> Any:
        dataset.augment.set_random_state(cfg.seed * 1000 + epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=len(tr) > cfg.batch_size
        )
        return fabric.setup_dataloaders(loader, use_distributed_sampler=False)

    def train_step(batch: Any) -> tuple[torch.Tensor, int]:
        xb, mb = batch
        logits = model(xb.contiguous(memory_format=torch.channels_last))
        return loss_fn(logits, mb), len(xb)

    def validate() -> dict[str, float]:
        logits = _predict_logits(net, x_va, fabric.device)
        dices = []
        for lg, truth in zip(logits, m_va):
            up = F.interpolate(lg[None], size=truth.shape, mode="bilinear", align_corners=False)[0, 0]
            dices.append(dice_scores((up >= 0).numpy()[None], truth[None])[0])
        return {"dice": float(np.mean(dices)), "dice_p10": float(np.percentile(dices, 10))}

    result = fit(
        fabric,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        epoch_batches=epoch_batches,
        train_step=train_step,
        validate=validate,
        select="dice",
        epochs=cfg.epochs,
        patience=cfg.patience,
        out=out,
        config=cfg.to_dict(),
        seed=cfg.seed,
        resume=resume,
        progress=progress,
        best_model=net,
    )
    fabric.load(out / "checkpoints" / "best.pt", {"model": net})
    net = net.cpu().to(memory_format=torch.contiguous_format).eval()
    training = {
        "data": cfg.data,
        "seed": cfg.seed,
        "n_train": len(tr),
        "n_val": len(va),
        "train_patients": len({pairs[i].patient_id for i in tr}),
        "val_patients": len({pairs[i].patient_id for i in va}),
        "val_images_relative": val_relative,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "val_dice_at_best": round(result.best_score, 4),
        "wall_seconds": round(result.elapsed, 1),
        "cpu_count": os.cpu_count(),
        "parameters": count_parameters(net),
        "skipped": [list(f) for f in failures],
        "train_config": cfg.to_dict(),
    }
    if init_training is not None:
        training["init"] = cfg.init
        training["init_part"] = init_part
        training["init_training"] = {k: v for k, v in init_training.items() if k != "val_images_relative"}
    widths = "" if seg_cfg.decoder_channels == SegmenterConfig().decoder_channels else f"-dec{cfg.decoder_widths[0]}"
    seg_cfg.version = f"lungs-unet-efficientnet_lite0{widths}-{s}px-seed{cfg.seed}"
    # int8 calibration: the first (up to) 64 training images, un-augmented, standardised like inference
    calibration = _standardise(x_tr[:64], "none", seg_cfg.mean, seg_cfg.std)
    SegmenterBundle(seg_cfg, training=training).save(out, net, calibration=calibration)
    return out
