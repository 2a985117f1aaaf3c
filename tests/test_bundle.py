"""The typed model bundle: converted zoo models reproduce the old weights; strict config; round-trip; card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cxrtriage.config import ConfigKeyError, ModelConfig
from cxrtriage.data.io import read_image
from cxrtriage.inference.predictor import Predictor
from cxrtriage.models.bundle import (
    BUNDLE_JSON,
    LEGACY_WEIGHTS_FILE,
    WEIGHTS_FILE,
    ModelBundle,
    shipped_models,
    zoo_dir,
)
from cxrtriage.models.registry import create_model

FIXTURE = Path(__file__).parent / "fixtures" / "zoo_reference_probs.json"
EXAMPLES = Path(__file__).resolve().parent.parent / "src" / "cxrtriage" / "examples"


@pytest.mark.parametrize("name", shipped_models())
def test_converted_zoo_model_matches_old_probabilities(name: str) -> None:
    ref = json.loads(FIXTURE.read_text())["models"][name]
    d = zoo_dir() / name
    assert (d / WEIGHTS_FILE).is_file() and not (d / LEGACY_WEIGHTS_FILE).exists()
    assert (d / WEIGHTS_FILE).stat().st_size <= 25 * 1024 * 1024
    pred = Predictor(d)
    assert pred.config.classes == ref["classes"]
    files = sorted(ref["probabilities"])
    assert files == sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    got = pred.probabilities([read_image(EXAMPLES / f) for f in files])
    want = np.array([ref["probabilities"][f] for f in files])
    # a lung-input model's masks come from the int8 ONNX segmenter, whose float epilogue may differ in the last
    # bit between CPUs (AVX2 / VNNI) and move a boundary pixel; full-image models are exact to float rounding
    assert np.abs(got - want).max() < (1e-3 if pred.config.input != "full" else 1e-6)


def _tiny_bundle(tmp_path: Path) -> tuple[Path, ModelBundle]:
    cfg = ModelConfig(arch="cnn4", task="pneumonia", classes=["NORMAL", "PNEUMONIA"], image_size=64)
    bundle = ModelBundle(cfg)
    model = create_model("cnn4", 2, pretrained=False)
    return bundle.save(tmp_path / "m", model), bundle


def test_unknown_key_in_config_json_is_refused(tmp_path: Path) -> None:
    d, _ = _tiny_bundle(tmp_path)
    raw = json.loads((d / "config.json").read_text())
    raw["treshold"] = 0.5
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigKeyError, match=r"treshold.*|config\.json") as exc:
        ModelBundle.load(d)
    assert "'treshold'" in str(exc.value) and "config.json" in str(exc.value)


def test_missing_key_in_config_json_is_refused(tmp_path: Path) -> None:
    d, _ = _tiny_bundle(tmp_path)
    raw = json.loads((d / "config.json").read_text())
    del raw["image_size"]
    (d / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigKeyError) as exc:
        ModelBundle.load(d)
    assert "'image_size'" in str(exc.value) and "config.json" in str(exc.value)


def test_unknown_key_in_a_bundle_section_is_refused(tmp_path: Path) -> None:
    d, _ = _tiny_bundle(tmp_path)
    (d / BUNDLE_JSON).write_text(json.dumps({"onnx": {"file": "model.onnx", "opset": 17, "sha256": "0", "x": 1}}))
    with pytest.raises(ConfigKeyError, match="'x'"):
        ModelBundle.load(d)


def test_save_load_round_trip(tmp_path: Path) -> None:
    import torch

    zoo = ModelBundle.load("finding-efficientnet_lite0")
    model = zoo.load_model()
    d = ModelBundle(
        **{
            k: getattr(zoo, k)
            for k in (
                "config",
                "train_config",
                "training",
                "split",
                "calibration",
                "ood",
                "onnx",
                "evaluation",
                "audit",
            )
        }
    ).save(tmp_path / "copy", model)
    back = ModelBundle.load(d)
    assert back == zoo
    assert back.sections_dict() == zoo.sections_dict()
    m2 = back.load_model()
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


def test_legacy_model_pt_is_read_with_a_warning(tmp_path: Path) -> None:
    import torch

    d, bundle = _tiny_bundle(tmp_path)
    state = bundle.load_model().state_dict()
    (d / WEIGHTS_FILE).unlink()
    torch.save(state, d / LEGACY_WEIGHTS_FILE)
    with pytest.warns(DeprecationWarning, match="model.pt"):
        ModelBundle.load(d).load_model()


@pytest.mark.parametrize("name", shipped_models())
def test_readme_front_matter_is_yaml_with_model_index(name: str) -> None:
    text = (zoo_dir() / name / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["library_name"] == "cxrtriage" and meta["pipeline_tag"] == "image-classification"
    assert meta["license"] and meta["datasets"] and meta["tags"]
    results = meta["model-index"][0]["results"]
    assert results[0]["dataset"]["split"] == "validation"
    types = {m["type"] for m in results[0]["metrics"]}
    assert {"accuracy", "auroc", "macro_sensitivity"} & types and all(
        set(m) == {"type", "value", "name"} for r in results for m in r["metrics"]
    )
    bundle = ModelBundle.load(name)
    assert results[0]["metrics"][0]["value"] == pytest.approx(bundle.evaluation.validation.metrics["accuracy"].value)
    from cxrtriage.cards.model_card import render_card

    assert render_card(bundle) == text, "README.md is not the rendering of the bundle"
