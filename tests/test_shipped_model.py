"""The shipped default model: size, model card, and the README's first command (``cxr demo``)."""

import json
import re
import subprocess
import sys
from pathlib import Path

from cxrtriage.models import ModelBundle, default_model_dir, load_model


def test_shipped_model_loads_and_is_small():
    d = default_model_dir()
    assert (d / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    model, cfg = load_model()
    assert cfg.task == "pneumonia" and cfg.classes == ["NORMAL", "PNEUMONIA"]
    assert cfg.threshold is not None and 0 < cfg.threshold < 1
    assert cfg.arch == "efficientnet_lite0"


def test_model_card_is_complete_and_matches_config():
    d = default_model_dir()
    bundle = ModelBundle.load(d)
    cfg = bundle.config
    md = (d / "README.md").read_text()
    assert bundle.calibration.threshold == cfg.threshold and f"{cfg.threshold:.4f}" in md
    assert bundle.calibration.temperature == cfg.temperature
    assert "Terms: CC BY 4.0" in md
    assert "Apache-2.0" in md
    assert bundle.split.seed == 0 and bundle.split.n_val > 0
    assert f"Version: `{cfg.version}`" in md and f"Architecture: {cfg.arch}" in md
    assert bundle.train_config.image_size == cfg.image_size
    assert bundle.training.wall_seconds > 0 and bundle.evaluation.command.startswith("cxr train")
    assert bundle.onnx.sha256
    auc = bundle.evaluation.validation.metrics["auroc"]
    assert auc.ci95[0] <= auc.value <= auc.ci95[1]
    for needle in (
        "Research and second-opinion use only",
        "Limitations",
        "Pediatric",
        "Operating point",
        bundle.onnx.sha256,
    ):
        assert needle in md


def test_demo_writes_page_and_prints_predictions(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cxrtriage.cli", "demo", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if "reference label" in x]
    assert len(lines) == 8
    page = (out / "index.html").read_text()
    assert page.count('<section class="card">') == 8
    assert "Research and second-opinion use only" in page
    assert len(list((out / "images").glob("*_gradcam.png"))) == 8
    # The examples come from the validation split; a working model gets most of them right.
    correct = sum(bool(re.search(r": (\w+) \(.*reference label \1$", x)) for x in lines)
    assert correct >= 6, proc.stdout


def test_evaluate_by_subgroup_on_examples(tmp_path, example_paths):
    """``cxr evaluate --by COLUMN`` reports metrics per value of a manifest column."""
    import csv

    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "site"])
        for i, p in enumerate(example_paths):
            w.writerow([p, p.name.split("_")[0], "A" if i % 2 else "B"])
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrtriage.cli",
            "evaluate",
            "--data",
            str(manifest),
            "--out",
            str(out),
            "--by",
            "site",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    groups = m["subgroups"]["site"]["groups"]
    assert set(groups) == {"A", "B"} and sum(g["n"] for g in groups.values()) == m["n"] == 8
    assert "by site:" in proc.stdout


def test_models_by_name_and_listing(capsys, example_paths):
    """Shipped models are addressable by name (``--model NAME``) and listed by ``cxr models``."""
    import pytest

    from cxrtriage.cli import main
    from cxrtriage.inference.predictor import Predictor
    from cxrtriage.models import ModelLoadError
    from cxrtriage.models.bundle import resolve_model_dir, shipped_models, zoo_dir

    names = shipped_models()
    assert {"pneumonia-efficientnet_lite0", "pneumonia-type-efficientnet_lite0"} <= set(names)
    assert "covid-efficientnet_lite0" not in names  # withdrawn: it failed its shortcut audit (README)
    assert resolve_model_dir("pneumonia-type-efficientnet_lite0") == zoo_dir() / "pneumonia-type-efficientnet_lite0"
    with pytest.raises(ModelLoadError, match="not a shipped model.*pneumonia-efficientnet_lite0"):
        resolve_model_dir("no-such-model")
    pred = Predictor("pneumonia-type-efficientnet_lite0")
    assert pred.config.task == "pneumonia-type" and pred.config.classes == ["normal", "bacterial", "viral"]
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == names
    for r in rows:
        assert r["card"].endswith("README.md") and "auroc" in r["validation"]
        assert (zoo_dir() / r["name"] / "model.safetensors").stat().st_size <= 25 * 1024 * 1024


def test_readme_table_of_shipped_models_is_the_generated_one():
    """README.md shows the table `cxr models` prints (in-source and out-of-source side by side), not a typed copy."""
    from cxrtriage.cli.models import shipped_models_markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = shipped_models_markdown()
    assert "out-of-source" in table.splitlines()[0]
    assert table in readme, "README.md's shipped-model table is stale: paste the output of `cxr models`"


def test_shipped_lung_input_models_name_the_shipped_segmenter_export():
    """Every shipped ``input: lungs | lung-crop`` model records the checksum of the segmenter shipped beside it.

    Fails when the segmenter is re-exported without re-validating (and re-recording) these models.
    """
    from cxrtriage.models.bundle import shipped_models, zoo_dir
    from cxrtriage.segment.runtime import load_segmenter

    configs = [ModelBundle.load(zoo_dir() / name).config for name in shipped_models()]
    lung_models = [c for c in configs if c.input != "full"]
    assert lung_models, "no shipped lung-input model"
    assert {c.segmenter_sha256 for c in lung_models} == {load_segmenter().onnx_sha256}
