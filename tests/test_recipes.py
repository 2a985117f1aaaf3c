"""Training recipes compared in docs/results/generalization/recipes.md: strong augmentation, the auxiliary
pneumonia-type head and weight averaging (EMA), on real images."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrtriage.config import TrainConfig
from cxrtriage.data.discover import discover
from cxrtriage.data.transforms import (
    RandomCLAHE,
    RandomGaussianNoise,
    RandomJPEG,
    build_train_transform,
)
from cxrtriage.experiments.recipes import compare_models, write_model_comparison
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.models.registry import create_model
from cxrtriage.tasks import get_task
from cxrtriage.training.aux import IGNORE_INDEX, AuxHeadNet, aux_targets
from cxrtriage.training.trainer import train


@pytest.fixture(scope="module")
def example_image(example_paths: list[Path]) -> Image.Image:
    return Image.open(example_paths[0]).convert("L").resize((96, 96))


@pytest.mark.parametrize("transform", [RandomCLAHE(p=1.0), RandomGaussianNoise(p=1.0), RandomJPEG(p=1.0)])
def test_each_strong_step_changes_pixels_and_keeps_the_image(transform, example_image: Image.Image) -> None:
    random.seed(0)
    out = transform(example_image)
    assert out.mode == "L" and out.size == example_image.size
    assert not np.array_equal(np.asarray(out), np.asarray(example_image))


def test_steps_with_p_zero_are_the_identity(example_image: Image.Image) -> None:
    for transform in (RandomCLAHE(p=0.0), RandomGaussianNoise(p=0.0), RandomJPEG(p=0.0)):
        assert transform(example_image) is example_image


def test_strong_augmentation_shape_range_and_seed(example_image: Image.Image) -> None:
    def draw(level: str, seed: int) -> torch.Tensor:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        return build_train_transform(augment=level, image_size=96)(example_image)

    strong = draw("strong", 1)
    assert strong.shape == (1, 96, 96) and strong.dtype == torch.float32
    assert float(strong.min()) >= -1.0 and float(strong.max()) <= 1.0
    assert torch.equal(strong, draw("strong", 1))
    assert not torch.equal(strong, draw("standard", 1))
    with pytest.raises(ValueError, match="augmentation level"):
        build_train_transform(augment="extreme")


def test_aux_head_adds_logits_and_needs_a_linear_head() -> None:
    net = create_model("efficientnet_lite0", 2)
    model = AuxHeadNet(net, 3)
    logits, aux = model(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 2) and aux.shape == (2, 3)
    with pytest.raises(ValueError, match="linear classifier"):
        AuxHeadNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), 3)


def _write_manifest(rows: list[dict], folder: Path) -> Path:
    out = folder / "manifest.csv"
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


@pytest.fixture(scope="module")
def kermany_subset(kermany_dir: Path, tmp_path_factory) -> Path:
    """A manifest of 72 Kermany train images (24 normal, 24 bacterial, 24 viral), paths absolute."""
    rows: dict[str, list[dict]] = {"": [], "bacteria": [], "virus": []}
    with (kermany_dir / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            kind = row.get("pneumonia_type") or ""
            if row["split"] == "train" and len(rows[kind]) < 24:
                rows[kind].append({**row, "path": str((kermany_dir / row["path"]).resolve())})
    return _write_manifest([r for group in rows.values() for r in group], tmp_path_factory.mktemp("kermany-subset"))


@pytest.mark.shared_data
def test_aux_targets_follow_the_file_names(kermany_subset: Path) -> None:
    samples = discover(kermany_subset, get_task("pneumonia"))
    fine = aux_targets(samples, kermany_subset, get_task("pneumonia-type"))
    classes = get_task("pneumonia-type").classes
    for s, t in zip(samples, fine):
        assert t != IGNORE_INDEX
        name = Path(s.path).name
        expected = "bacterial" if "bacteria" in name else "viral" if "virus" in name else "normal"
        assert classes[t] == expected


def _tiny_config(data: Path, tmp_path: Path, **recipe) -> TrainConfig:
    """One epoch at 64 px on the subset, into ``tmp_path/m``, with the given recipe fields."""
    return TrainConfig(
        data=str(data),
        out=str(tmp_path / "m"),
        image_size=64,
        epochs=1,
        batch_size=16,
        val_fraction=0.3,
        cache_dir=str(tmp_path / "cache"),
        **recipe,
    )


@pytest.mark.shared_data
def test_training_with_aux_head_ema_and_strong_augmentation(kermany_subset: Path, tmp_path: Path) -> None:
    """The saved model is the plain network (no auxiliary weights); the EMA weights are what is saved."""
    cfg = _tiny_config(kermany_subset, tmp_path, augment="strong", aux_task="pneumonia-type", ema_decay=0.9)
    result = train(cfg, progress=False)
    bundle = ModelBundle.load(result.model_dir)
    assert bundle.train_config is not None and bundle.train_config.aux_task == "pneumonia-type"
    net = bundle.load_model()  # strict load into the plain architecture: no "aux." keys
    last = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=False)
    assert any(k.startswith("aux.") for k in last["model"]) and "ema" in last
    saved = net.state_dict()
    ema = last["ema"]
    assert all(torch.allclose(saved[k].float(), ema[k].float()) for k in saved)
    raw = {k.removeprefix("net."): v for k, v in last["model"].items() if k.startswith("net.")}
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if saved[k].is_floating_point())
    # resume continues from the checkpoint with the EMA restored
    cfg.epochs = 2
    again = train(cfg, progress=False, resume=True)
    assert again.best_epoch in (1, 2)
    with (tmp_path / "m" / "history.csv").open() as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]


@pytest.fixture(scope="module")
def ieee_subset(shared_data_dir: Path, tmp_path_factory) -> Path:
    """ieee8023-cxr: its 7 "No Finding" images and 13 pneumonias (COVID-19 and bacterial), paths absolute."""
    src = shared_data_dir / "ieee8023-cxr"
    if not (src / "manifest.csv").is_file():
        pytest.skip("../shared/data/ieee8023-cxr not available")
    picked: list[dict] = []
    with (src / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            n_pos = sum(r["label"] != "No Finding" for r in picked)
            if row["label"] == "No Finding" or (row["label"] in ("COVID-19", "Klebsiella") and n_pos < 13):
                picked.append({**row, "path": str((src / row["path"]).resolve())})
    return _write_manifest(picked, tmp_path_factory.mktemp("ieee-subset"))


@pytest.mark.shared_data
def test_compare_models_in_source_vs_external(kermany_subset: Path, ieee_subset: Path, tmp_path: Path) -> None:
    cfg = _tiny_config(kermany_subset, tmp_path)
    model_dir = train(cfg, progress=False).model_dir
    rows = compare_models([("a", model_dir), ("b", model_dir)], [ieee_subset], n_boot=20, cache_dir=cfg.cache_dir)
    a, b = rows
    assert a.recipe["image_size"] == 64 and a.recipe["augment"] == "standard"
    assert a.validation.n == ModelBundle.load(model_dir).split.n_val
    (ext,) = a.external.values()
    assert ext.n == 20 and ext.class_counts == {"NORMAL": 7, "PNEUMONIA": 13}
    assert a.pooled_external is not None and a.pooled_external.n == 20
    assert a.to_dict() == b.to_dict() | {"name": "a"}
    table = write_model_comparison(rows, tmp_path / "cmp").read_text()
    assert table.count("\n| a |") == 1 and "pooled out-of-source AUROC" in table
    assert "Not a diagnosis" in table
