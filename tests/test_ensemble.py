"""Seed ensembles (``cxr ensemble``): shared split, mean of logits, float16 storage, ONNX, CAM head, OOD, card."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxrtriage.cli import main
from cxrtriage.config import TrainConfig
from cxrtriage.experiments.ensemble import build_seed_ensemble
from cxrtriage.inference.backend import OnnxBackend, TorchBackend, config_batches
from cxrtriage.models.bundle import ModelBundle
from cxrtriage.ood.mahalanobis import MahalanobisDetector
from cxrtriage.training.trainer import train


def _member(data: Path, tmp: Path, name: str, seed: int, split_seed: int | None) -> Path:
    cfg = TrainConfig(
        data=str(data),
        out=str(tmp / name),
        cache_dir=str(tmp / "cache"),
        arch="efficientnet_lite0",
        pretrained=False,
        image_size=64,
        batch_size=8,
        epochs=1,
        val_fraction=0.5,
        seed=seed,
        split_seed=split_seed,
    )
    train(cfg, progress=False)
    return tmp / name


@pytest.fixture(scope="module")
def members(tiny_folder_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("ens")
    return [_member(tiny_folder_dataset, tmp, f"seed{s}", s, 0) for s in (1, 2)]


def _logits(model_dir: Path, images: list[Path]) -> np.ndarray:
    b = TorchBackend.from_dir(model_dir, threads=None, channels_last=False)
    return b.run(config_batches(images, b.require_config()))[0]


def test_the_split_seed_keeps_validation_and_changes_the_weights(members: list[Path]) -> None:
    a, b = (ModelBundle.load(m) for m in members)
    assert a.split.seed == b.split.seed == 0
    assert sorted(a.split.val_paths_relative) == sorted(b.split.val_paths_relative)
    assert a.train_config.seed == 1 and b.train_config.seed == 2
    assert not np.array_equal(a.load_model().classifier.weight.detach(), b.load_model().classifier.weight.detach())


def test_ensemble_logits_are_the_members_mean(members: list[Path], tmp_path: Path, example_paths: list[Path]) -> None:
    exact = build_seed_ensemble(members, tmp_path / "f32", float16=False)
    half = build_seed_ensemble(members, tmp_path / "f16")
    mean = np.mean([_logits(m, example_paths) for m in members], axis=0)
    assert np.abs(_logits(exact, example_paths) - mean).max() < 1e-4
    assert np.abs(_logits(half, example_paths) - mean).max() < 0.05  # float16-rounded weights
    b = ModelBundle.load(half)
    assert b.config.members == 2 and b.config.threshold is None and b.config.temperature == 1.0
    assert [m["seed"] for m in b.training.members] == [1, 2]
    assert all(0.0 <= m["val_auroc"] <= 1.0 for m in b.training.members)  # from history.csv: no card yet
    assert 0.4 < b.weights_mb() / ModelBundle.load(exact).weights_mb() < 0.6


def test_members_must_share_the_validation_split(
    members: list[Path], tiny_folder_dataset: Path, tmp_path: Path
) -> None:
    other = _member(tiny_folder_dataset, tmp_path, "own-split", 5, None)
    own = ModelBundle.load(other).split.val_paths_relative
    assert sorted(own) != sorted(ModelBundle.load(members[0]).split.val_paths_relative)
    with pytest.raises(ValueError, match="--split-seed"):
        build_seed_ensemble([members[0], other], tmp_path / "bad")
    with pytest.raises(ValueError, match="at least 2"):
        build_seed_ensemble(members[:1], tmp_path / "one")


def test_cli_calibrate_export_onnx_half_weights_and_cam_head(
    members: list[Path], tmp_path: Path, example_paths: list[Path]
) -> None:
    out = tmp_path / "ens"
    assert main(["ensemble", "--members", *map(str, members), "--out", str(out)]) == 0
    assert main(["calibrate", "--model", str(out)]) == 0
    assert ModelBundle.load(out).config.threshold is not None
    f32 = tmp_path / "ens-f32"
    build_seed_ensemble(members, f32, float16=False)
    assert main(["export", "--model", str(out)]) == 0
    assert main(["export", "--model", str(f32)]) == 0
    ratio = (out / "model.onnx").stat().st_size / (f32 / "model.onnx").stat().st_size
    assert 0.4 < ratio < 0.6
    onnx = OnnxBackend(out, threads=1)
    x = list(config_batches(example_paths, onnx.require_config()))
    lo, fmap = onnx.run(x, features="map")
    lt, _ = TorchBackend.from_dir(out, threads=None, channels_last=False).run(x)
    assert np.abs(lo - lt).max() < 1e-3
    assert onnx.head is not None and fmap.shape[1] == onnx.head[0].shape[1] == 2 * 1280
    w, bias = onnx.head
    assert np.abs(fmap.mean(axis=(2, 3)) @ w.T + bias - lo).max() < 1e-3  # CAM's head gives the logits
    assert main(["fit-ood", "--model", str(out)]) == 0
    det = MahalanobisDetector.load(out)
    assert det is not None and det.columns == 1280 and det.precision.shape == (1280, 1280)
    assert np.isfinite(det.score(fmap.mean(axis=(2, 3)))).all()


def test_ood_detector_of_an_ensemble_reads_its_first_member(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(200, 6)), rng.normal(size=(200, 6))
    labels = np.arange(200) % 2
    det = MahalanobisDetector.fit(first, labels)
    det.columns = 6
    stacked = np.concatenate([first, second * 100], axis=1)
    assert np.allclose(det.score(stacked), MahalanobisDetector.fit(first, labels).score(first))


def test_members_must_share_the_lung_segmenter_export(members: list[Path], tmp_path: Path) -> None:
    import json
    import shutil

    copies = []
    for i, (m, sha) in enumerate(zip(members, ("a" * 64, "b" * 64))):
        d = tmp_path / f"m{i}"
        shutil.copytree(m, d)
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "input": "lungs", "segmenter_sha256": sha}))
        copies.append(d)
    with pytest.raises(ValueError, match="different lung segmenter exports.*aaaaaaaaaaaa, bbbbbbbbbbbb"):
        build_seed_ensemble(copies, tmp_path / "bad")
    cfg = json.loads((copies[1] / "config.json").read_text())
    (copies[1] / "config.json").write_text(json.dumps({**cfg, "segmenter_sha256": "a" * 64}))
    assert ModelBundle.load(build_seed_ensemble(copies, tmp_path / "ok")).config.segmenter_sha256 == "a" * 64
