"""Lung segmentation: post-processing, the shipped segmenter (ONNX = PyTorch, sizes, DICOM, failures),
``cxr segment``, ``cxrtriage.segment_lungs``, the lung input step of classifiers and ``cxr train-segmenter``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.config import ModelConfig, SegmenterTrainConfig
from cxrtriage.data.cache import resize_gray
from cxrtriage.data.io import decode_bytes, read_image
from cxrtriage.segment import (
    LungSegmenter,
    SegmentationFailedError,
    assess_mask,
    clean_mask,
    detect_lung_only,
    load_segmenter,
    lung_bbox,
    segment_lungs,
    shipped_segmenter_dir,
)
from cxrtriage.segment.bundle import SegmenterBundle

SEG = shipped_segmenter_dir()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def _heldout_rows(shared_data_dir: Path, n: int) -> list[dict[str, str]]:
    """``n`` of the shipped segmenter's own held-out images (patient-level split recorded in its bundle)."""
    held = SegmenterBundle.load(SEG).training["val_images_relative"]
    with (shared_data_dir / "lung-masks" / "manifest.csv").open(newline="") as fh:
        rows = {r["image"]: r for r in csv.DictReader(fh)}
    return [rows[p] for p in held[:: max(1, len(held) // n)][:n]]


def test_clean_mask_keeps_the_two_largest_components_and_fills_their_holes():
    m = np.zeros((40, 60), bool)
    m[5:35, 5:25] = True  # left lung
    m[15:20, 10:15] = False  # a hole (consolidation left out)
    m[5:35, 35:55] = True  # right lung
    m[0:2, 0:2] = True  # a speck
    out, n = clean_mask(m)
    assert n == 2 and out.dtype == bool
    assert out[15:20, 10:15].all() and not out[0:2, 0:2].any()
    assert not out[:, 26:34].any()  # the gap between the lungs is not a hole
    assert clean_mask(np.zeros((8, 8)))[1] == 0
    with pytest.raises(ValueError, match="2-D"):
        clean_mask(np.zeros((2, 8, 8)))


def test_fill_holes_equals_scipy_binary_fill_holes_on_real_and_random_masks(shared_data_dir):
    from scipy import ndimage

    from cxrtriage.segment.postprocess import fill_holes

    rng = np.random.default_rng(0)
    with (shared_data_dir / "lung-masks" / "manifest.csv").open(newline="") as fh:
        paths = [r["mask"] for r in csv.DictReader(fh)][::200]
    masks = [np.asarray(Image.open(shared_data_dir / "lung-masks" / p)) > 127 for p in paths]
    # the segmenter's raw (thresholded, uncleaned) masks of real adult images
    seg = load_segmenter()
    adult = [read_image(p) for p in sorted((shared_data_dir / "covid19-radiography").rglob("*.jpg"))[::500]]
    masks += [lg >= 0 for lg in seg.logits(adult)]
    masks += [rng.random((37, 53)) > q for q in (0.3, 0.5, 0.7) for _ in range(5)]
    masks += [np.zeros((9, 9), bool), np.ones((9, 9), bool)]
    assert len(masks) > 40
    for m in masks:
        assert np.array_equal(fill_holes(m), ndimage.binary_fill_holes(m))


def test_assess_mask_flags_implausible_areas_and_bbox():
    empty = assess_mask(np.zeros((50, 50)))
    assert empty.failed and "no lung" in empty.reason
    tiny = np.zeros((100, 100), bool)
    tiny[10:15, 10:15] = True
    assert assess_mask(tiny).failed and "< 5%" in assess_mask(tiny).reason
    assert assess_mask(np.ones((100, 100))).failed and "> 50%" in assess_mask(np.ones((100, 100))).reason
    ok = np.zeros((100, 100), bool)
    ok[20:80, 10:40] = ok[20:80, 60:90] = True
    res = assess_mask(ok)
    assert not res.failed and res.fraction == pytest.approx(0.36) and res.components == 2
    assert lung_bbox(ok, margin=0.05) == (15, 85, 5, 95)
    assert lung_bbox(np.zeros((10, 20))) == (0, 10, 0, 20)


def test_shipped_segmenter_bundle_is_complete_and_small():
    bundle = SegmenterBundle.load(SEG)
    for name in ("config.json", "model.safetensors", "model.onnx", "bundle.json", "README.md"):
        assert (SEG / name).is_file(), name
    assert (SEG / "model.onnx").stat().st_size <= 25 * 2**20
    assert (SEG / "model.safetensors").stat().st_size <= 25 * 2**20
    assert bundle.training["val_patients"] > 50 and bundle.training["n_val"] > 100
    card = (SEG / "README.md").read_text()
    assert "not a medical device" in card and "Dice" in card


def test_onnx_segmenter_equals_pytorch(example_paths, tmp_path):
    """The float32 export equals PyTorch; the shipped int8 model.onnx stays close to it and draws the same masks."""
    torch = pytest.importorskip("torch")
    from cxrtriage.segment.bundle import export_onnx

    seg = LungSegmenter(SEG)
    net = seg.bundle.torch_model(SEG)
    images = [read_image(p) for p in example_paths[:4]]
    x = np.stack([seg.preprocess(im) for im in images])
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()[:, 0]
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    for name in ("config.json", "bundle.json", "model.safetensors"):
        (fp32 / name).write_bytes((SEG / name).read_bytes())
    export_onnx(net, fp32 / "model.onnx", seg.config.image_size)
    exact = LungSegmenter(fp32).logits(images)
    assert exact.shape == ref.shape == (4, seg.config.image_size, seg.config.image_size)
    assert float(np.abs(exact - ref).max()) < 1e-3
    assert seg.config.onnx_precision == "int8"
    got = seg.logits(images)
    # int8 (7-bit weights, the same result with and without VNNI): probabilities within a percent on
    # average, masks (probability >= 0.5) nearly identical. Full-range int8 weights on an AVX2-only CPU
    # gave 0.028 and a worst mask Dice of 0.94 here (saturating VPMADDUBSW; segment.bundle.quantize_onnx).
    prob = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    assert float(np.abs(prob(got) - prob(ref)).mean()) < 0.01
    mask_dice = [_dice(g >= 0, r >= 0) for g, r in zip(got, ref)]
    assert float(np.mean(mask_dice)) > 0.98 and min(mask_dice) > 0.97, mask_dice


@pytest.mark.shared_data
def test_segmenter_agrees_with_held_out_pseudo_masks(shared_data_dir):
    rows = _heldout_rows(shared_data_dir, 24)
    seg = load_segmenter()
    root = shared_data_dir / "lung-masks"
    imgs = [read_image(root / r["image"]) for r in rows]
    truths = [read_image(root / r["mask"]) > 127 for r in rows]
    masks = seg.segment_batch(imgs)
    dices = [_dice(m.mask, t) for m, t in zip(masks, truths)]
    assert all(m.mask.shape == t.shape for m, t in zip(masks, truths))
    assert float(np.mean(dices)) >= 0.93 and min(dices) >= 0.8, dices


def test_masks_come_back_at_the_input_size_for_non_square_and_dicom(example_paths):
    from cxrtriage.data.dicom import write_dicom

    img = read_image(example_paths[0])
    wide = np.asarray(Image.fromarray(img).resize((300, 220)))
    m_wide = segment_lungs(wide)
    assert m_wide.shape == (220, 300) and m_wide.dtype == bool
    buf = io.BytesIO()
    write_dicom(buf, np.asarray(Image.fromarray(img).resize((250, 310))), bits=16)
    dcm = decode_bytes(buf.getvalue(), "x.dcm")
    m_dcm = load_segmenter().segment(dcm)
    assert m_dcm.mask.shape == (310, 250) and not m_dcm.failed
    # the same anatomy: the non-square mask squashed back agrees with the square one
    square = segment_lungs(img)
    back = np.asarray(Image.fromarray(m_wide).resize(img.shape[::-1], Image.Resampling.NEAREST))
    assert _dice(square, back) > 0.9


def test_blank_and_non_cxr_inputs_are_flagged_not_used():
    from cxrtriage.ood.gate import non_cxr_images

    seg = load_segmenter()
    assert seg.segment(np.zeros((256, 256), np.uint8)).failed
    assert seg.segment(np.full((200, 240), 255, np.uint8)).failed
    with pytest.raises(SegmentationFailedError, match="failed"):
        segment_lungs(np.zeros((128, 128), np.uint8))
    # the area check is not a CXR detector (gate 1 is): it flags most drawn pages and plots, not all
    drawn = [im for kind, _, im in non_cxr_images(seed=3, rendered=6, crops=0) if kind in ("text_page", "plot")]
    flagged = [seg.segment(im) for im in drawn]
    assert len(drawn) >= 10 and sum(m.failed for m in flagged) >= len(drawn) / 2
    assert all(m.reason for m in flagged if m.failed)


@pytest.mark.shared_data
def test_lung_only_images_are_detected_and_the_lungs_step_leaves_them_unchanged(shared_data_dir):
    from cxrtriage.inference.lung_input import apply_lung_input

    root = shared_data_dir / "rsna-lungs"
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::997][:8]
    imgs = np.stack([read_image(root / r["path"]) for r in rows])
    for im, r in zip(imgs, rows):
        det = detect_lung_only(im)
        assert det is not None
        assert _dice(det.mask, read_image(root / r["mask_path"]) > 127) > 0.97
    res = apply_lung_input(imgs, "lungs")
    assert all(res.lung_only) and not any(res.fallback)
    assert np.array_equal(res.images, imgs)  # idempotent: already lung-only input is evaluated as it is
    again = apply_lung_input(res.images, "lungs")
    assert np.array_equal(again.images, imgs)


@pytest.mark.shared_data
def test_equalize_lungs_spreads_the_lung_pixels_whatever_the_mask_area(shared_data_dir):
    from cxrtriage.data.transforms import normalize_intensity

    root = shared_data_dir / "rsna-lungs"
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::613][:12]
    fractions, floors, medians = [], [], []
    for r in rows:
        im = read_image(root / r["path"])
        lung = im > 0
        glob = normalize_intensity(im, "equalize")
        eq = normalize_intensity(im, "equalize-lungs")
        assert (eq[~lung] == 0).all() and eq[lung].min() >= 1
        fractions.append(lung.mean())
        floors.append(np.percentile(glob[lung], 1))
        medians.append(np.median(eq[lung]))
    # global equalisation: the lungs' darkest grey level is set by the black background's share
    assert np.corrcoef(fractions, floors)[0, 1] < -0.9 and min(floors) > 100
    # over the lung pixels only: centred and spread over the range for every mask area
    assert all(abs(m - 128) < 12 for m in medians)
    full = np.arange(1, 257, dtype=np.int64).reshape(16, 16).clip(1, 255).astype(np.uint8)
    assert np.abs(normalize_intensity(full, "equalize-lungs").astype(int) - full.astype(int)).max() <= 2


def test_lung_input_step_masks_and_crops_ordinary_images(example_paths):
    from cxrtriage.inference.backend import config_batches
    from cxrtriage.inference.lung_input import apply_lung_input

    imgs = np.stack([resize_gray(read_image(p), 128) for p in example_paths[:3]])
    lungs = apply_lung_input(imgs, "lungs")
    assert not any(res for res in lungs.lung_only) and not any(lungs.fallback)
    for out, m in zip(lungs.images, lungs.masks):
        assert (
            m is not None
            and (out[~m.mask] == 0).all()
            and np.array_equal(out[m.mask], imgs[0][m.mask] * 0 + out[m.mask])
        )
    crop = apply_lung_input(imgs, "lung-crop")
    assert crop.images.shape == imgs.shape and not np.array_equal(crop.images, imgs)
    full_cfg = ModelConfig("efficientnet_lite0", "pneumonia", ["NORMAL", "PNEUMONIA"], 128)
    lung_cfg = ModelConfig("efficientnet_lite0", "pneumonia", ["NORMAL", "PNEUMONIA"], 128, input="lungs")
    xf = next(config_batches(list(imgs), full_cfg))
    xl = next(config_batches(list(imgs), lung_cfg))
    assert xf.shape == xl.shape == (3, 1, 128, 128) and not np.allclose(xf, xl)
    with pytest.raises(ValueError, match="input"):
        ModelConfig("efficientnet_lite0", "pneumonia", ["NORMAL", "PNEUMONIA"], 128, input="chest")


def test_cxr_segment_cli_writes_masks_and_json_lines(example_paths, tmp_path, capsys):
    from cxrtriage.cli.main import main

    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((90, 70), np.uint8)).save(blank)
    out = tmp_path / "masks"
    assert main(["segment", str(example_paths[0]), str(blank), "--out", str(out), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [Path(x["image"]).name for x in lines] == [example_paths[0].name, "blank.png"]
    assert not lines[0]["failed"] and 0.08 < lines[0]["lung_fraction"] < 0.45
    assert lines[1]["failed"] and lines[1]["reason"]
    m = np.asarray(Image.open(out / f"{example_paths[0].stem}_lungs.png"))
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    assert m.shape == read_image(example_paths[0]).shape
    assert np.asarray(Image.open(out / "blank_lungs.png")).shape == (90, 70)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["segment", str(bad), "--out", str(out)]) == 1
    assert "bad.png" in capsys.readouterr().out


def test_segment_lungs_is_exported_at_the_top_level(example_paths):
    import cxrtriage

    m = cxrtriage.segment_lungs(example_paths[1])
    assert m.dtype == bool and m.shape == read_image(example_paths[1]).shape
    assert 0.08 < m.mean() < 0.45


@pytest.mark.shared_data
def test_train_segmenter_cli_tiny_run_resumes_and_writes_a_bundle(shared_data_dir, tmp_path, capsys):
    from cxrtriage.cli.main import main

    out = tmp_path / "seg"
    base = ["train-segmenter", "--data", str(shared_data_dir / "lung-masks"), "--out", str(out), "--image-size", "64"]
    base += ["--max-train-images", "24", "--max-val-images", "8", "--batch-size", "8", "--quiet"]
    base += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert main(base + ["--epochs", "1"]) == 0
    assert "held-out Dice" in capsys.readouterr().out
    assert main(base + ["--epochs", "2", "--resume"]) == 0
    with (out / "history.csv").open() as fh:
        hist = list(csv.DictReader(fh))
    assert [r["epoch"] for r in hist] == ["1", "2"]
    bundle = SegmenterBundle.load(out)
    assert bundle.config.image_size == 64 and bundle.training["n_val"] == 8
    held = set(bundle.training["val_images_relative"])
    seg = LungSegmenter(out)
    assert seg.logits([np.zeros((64, 64), np.uint8)]).shape == (1, 64, 64)
    # the split is by patient: no held-out patient among the training images
    from cxrtriage.data.patients import patient_id_from_filename

    assert held and all(patient_id_from_filename(p) for p in held)
    # fine-tuning from the bundle keeps its split and records where it started; another seed's split is refused
    tuned = tmp_path / "tuned"
    tune = [a if a != str(out) else str(tuned) for a in base]
    assert main(tune + ["--epochs", "1", "--init", str(out), "--augment", "mild"]) == 0
    record = SegmenterBundle.load(tuned).training
    assert record["init"] == str(out) and record["init_training"]["epochs_run"] == 2
    assert set(record["val_images_relative"]) == held
    capsys.readouterr()
    other = [a if a != str(out) else str(tmp_path / "other") for a in base]
    assert main(other + ["--epochs", "1", "--init", str(out), "--seed", "3"]) != 0
    assert "another validation split" in capsys.readouterr().err
    # a narrower decoder: the encoder carries over from the bundle, the decoder starts fresh
    narrow = [a if a != str(out) else str(tmp_path / "narrow") for a in base]
    assert main(narrow + ["--epochs", "1", "--init", str(out), "--decoder-channels", "32,16,16,8,8"]) == 0
    nb = SegmenterBundle.load(tmp_path / "narrow")
    assert nb.config.decoder_channels == [32, 16, 16, 8, 8] and nb.training["init_part"] == "encoder"
    assert record["init_part"] == "network" and "-dec32-" in nb.config.version
    start, fresh = bundle.torch_model(out), nb.torch_model(tmp_path / "narrow")
    assert fresh.decoder.blocks[0].conv1[0].out_channels == 32 != start.decoder.blocks[0].conv1[0].out_channels
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(narrow + ["--epochs", "1", "--decoder-channels", "32,16,8"])
    assert "--decoder-channels" in capsys.readouterr().err
    with pytest.raises(ValueError, match="five comma-separated positive integers"):
        SegmenterTrainConfig(data="x", decoder_channels="32,16,8")


def test_a_lungs_input_model_trains_and_predicts_with_the_same_lung_step(tiny_folder_dataset, tmp_path):
    """``cxr train --input lungs``: the bundle declares it and every inference path applies the same step."""
    from cxrtriage.config import TrainConfig
    from cxrtriage.data.cache import load_cached
    from cxrtriage.data.transforms import preprocess
    from cxrtriage.inference.backend import TorchBackend, config_batches
    from cxrtriage.inference.lung_input import apply_lung_input
    from cxrtriage.models.bundle import ModelBundle
    from cxrtriage.training.trainer import train

    cfg = TrainConfig(
        data=str(tiny_folder_dataset),
        out=str(tmp_path / "m"),
        cache_dir=str(tmp_path / "cache"),
        arch="cnn4",
        pretrained=False,
        image_size=64,
        batch_size=8,
        val_fraction=0.5,
        epochs=1,
        input="lungs",
    )
    res = train(cfg, progress=False)
    bundle = ModelBundle.load(res.model_dir)
    assert bundle.config.input == "lungs"
    # the masks came from the shipped segmenter, and the model says which export that was
    from cxrtriage.segment.runtime import load_segmenter

    assert bundle.config.segmenter_sha256 == load_segmenter().onnx_sha256
    assert bundle.training is not None and "lung_segmentation_fallbacks" in bundle.training.runtime
    import torch
    from safetensors.torch import load_file

    from cxrtriage.models.registry import create_model

    net = create_model("cnn4", 2, pretrained=False)
    net.load_state_dict(load_file(str(Path(res.model_dir) / "model.safetensors")))
    backend = TorchBackend(net.eval(), bundle.config, threads=1)
    paths = sorted(str(p) for p in tiny_folder_dataset.rglob("*.png"))[:4]
    imgs = load_cached(paths, 64, str(tmp_path / "cache")).images
    via_config = next(config_batches(list(imgs), bundle.config))
    stepped = apply_lung_input(np.asarray(imgs), "lungs").images
    by_hand = np.stack([backend.preprocess(im) for im in imgs])
    assert np.allclose(via_config, by_hand)
    # the lung step really ran: the input is the masked image, preprocessed, not the full one
    c = bundle.config
    assert np.allclose(via_config, np.stack([preprocess(im, 64, c.intensity, c.mean, c.std) for im in stepped]))
    assert not np.allclose(via_config, np.stack([preprocess(im, 64, c.intensity, c.mean, c.std) for im in imgs]))
    with torch.no_grad():
        assert backend.run([via_config])[0].shape == (4, 2)


def test_heldout_dice_reports_the_cleaned_reference_and_the_worst_images(shared_data_dir, tmp_path):
    from cxrtriage.experiments.segmenter import contact_sheet, heldout_dice

    rows = _heldout_rows(shared_data_dir, 12)
    seg = load_segmenter()
    held = heldout_dice(seg, shared_data_dir / "lung-masks", [r["image"] for r in rows], worst=3)
    worst = held.pop("worst_items")
    assert held["n"] == 12 and sum(v["n"] for v in held["by_label"].values()) == 12
    assert 0.0 <= held["dice_min"] <= held["dice_mean"] <= 1.0
    assert 0.0 < held["reference_ceiling_mean"] <= 1.0
    assert 0 <= held["reference_more_than_two_components"] <= 12
    # the worst three, lowest first, with their reference masks at the image's size
    assert len(worst) == 3 and all(ref.shape == im.shape for im, _, ref, _ in worst)
    scores = [float(cap.rsplit(" ", 1)[1]) for *_, cap in worst]
    assert scores == sorted(scores)
    out = contact_sheet(
        [(im, m, c) for im, m, _, c in worst], tmp_path / "w.png", references=[r for _, _, r, _ in worst]
    )
    assert Image.open(out).size == (8 * 160, 174)


def test_a_lung_input_model_refuses_a_segmenter_export_it_was_not_validated_with(example_paths, tmp_path, capsys):
    """A retrained or re-quantised segmenter keeps its version string; the recorded checksum catches it."""
    import dataclasses
    import shutil

    from cxrtriage.cli.main import main
    from cxrtriage.inference.backend import config_batches
    from cxrtriage.inference.lung_input import SegmenterMismatchError
    from cxrtriage.models.bundle import zoo_dir
    from cxrtriage.segment.runtime import load_segmenter

    shipped = load_segmenter().onnx_sha256
    imgs = [resize_gray(read_image(p), 128) for p in example_paths[:2]]
    base = ModelConfig("efficientnet_lite0", "finding", ["NO_FINDING", "FINDING"], 128, input="lungs")
    ok = dataclasses.replace(base, segmenter_sha256=shipped)
    assert np.allclose(next(config_batches(imgs, ok)), next(config_batches(imgs, base)))
    other = dataclasses.replace(base, segmenter_sha256="0" * 64)
    with pytest.raises(SegmenterMismatchError, match=f"000000000000.*{shipped[:12]}"):
        next(config_batches(imgs, other))
    with pytest.raises(ValueError, match="64 lower-case hex"):
        dataclasses.replace(base, segmenter_sha256="184CADE")
    # end to end: a shipped lung-input model whose record names another export is refused with the reason
    model = tmp_path / "finding"
    shutil.copytree(zoo_dir() / "finding-efficientnet_lite0", model)
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["segmenter_sha256"] == shipped
    (model / "config.json").write_text(json.dumps({**cfg, "segmenter_sha256": "f" * 64}))
    assert main(["predict", "--model", str(model), str(example_paths[0]), "--no-gradcam"]) == 2
    err = capsys.readouterr().err
    assert "ffffffffffff" in err and shipped[:12] in err and "re-validate" in err
