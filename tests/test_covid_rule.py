"""The COVID shipping rule (``cxr covid-rule``) and the multi-source manifest, on real images and a tiny real model."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxrtriage.cli.main import main
from cxrtriage.data.discover import DATASET_LABEL, discover
from cxrtriage.experiments.covid_rule import MAX_PNEUMONIA_CALLED_COVID, MIN_AUROC, covid_rule
from cxrtriage.experiments.evaluate import score_dataset
from cxrtriage.inference.predictor import Predictor
from cxrtriage.tasks import get_task

pytestmark = pytest.mark.shared_data

REPO = Path(__file__).resolve().parents[1]


def _combine_module():
    spec = importlib.util.spec_from_file_location("combine_datasets", REPO / "scripts" / "combine_datasets.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _subset(source: Path, folder: Path, labels: dict[str, int], exclude: str | None = None) -> Path:
    """A manifest with the first ``n`` rows of each label of ``source`` (absolute paths, other columns kept)."""
    with (source / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked = []
    for label, n in labels.items():
        chosen = [r for r in rows if r["label"] == label and not (exclude and r.get(exclude, "").strip())][:n]
        assert len(chosen) == n
        picked += chosen
    folder.mkdir(parents=True)
    with (folder / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in picked:
            w.writerow({**r, "path": str((source / r["path"]).resolve())})
    return folder


@pytest.fixture(scope="module")
def covid4_model(shared_data_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 1-epoch covid4 model at 64 px trained on 8 images per class from two sources, and an ieee8023 subset."""
    tmp = tmp_path_factory.mktemp("covid4")
    c19 = _subset(
        shared_data_dir / "covid19-radiography",
        tmp / "covid19-radiography",
        dict.fromkeys(("COVID", "Normal", "Viral_Pneumonia"), 8),
    )
    rsna = _subset(
        shared_data_dir / "rsna-lungs", tmp / "rsna-lungs", {"Lung_Opacity": 8, "No_Lung_Opacity_Not_Normal": 3}
    )
    manifest = tmp / "combined" / "manifest.csv"
    counts = _combine_module().combine([str(c19), str(rsna)], "covid4", manifest)
    assert counts == {"covid19-radiography": 24, "rsna-lungs": 8}  # No_Lung_Opacity_Not_Normal has no covid4 class
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["source"] for r in rows} == {"covid19-radiography", "rsna-lungs"}
    assert all(r["patient_id"].startswith(r["source"] + ":") for r in rows)
    out = tmp / "model"
    argv = ["train", "--task", "covid4", "--data", str(manifest), "--out", str(out), "--arch", "cnn4"]
    argv += ["--no-pretrained", "--image-size", "64", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.5"]
    argv += ["--threads", "1", "--quiet"]
    assert main(argv) == 0
    ieee = _subset(
        shared_data_dir / "ieee8023-cxr",
        tmp / "ieee8023-cxr",
        {"COVID-19": 10, "Klebsiella": 5, "SARS": 4, "No Finding": 3, "ARDS": 1},
        exclude="covid19_radiography_duplicate",
    )
    return out, ieee


def test_rule_figures_are_those_of_the_scored_images(covid4_model, tmp_path):
    model, ieee = covid4_model
    passed, (res,) = covid_rule(model, [ieee])
    task = get_task("covid4")
    scored = score_dataset(Predictor(model), ieee, n_boot=0)
    y = np.array([s.target for s in scored.samples])
    covid = y == task.classes.index("COVID")
    # ARDS has no covid4 class; Klebsiella -> Lung_Opacity and SARS -> Viral_Pneumonia are the non-COVID pneumonias.
    assert (res.n_covid, res.n_non_covid, res.n_pneumonia) == (10, 12, 9)
    assert res.auroc == pytest.approx(roc_auc_score(covid, scored.probs[:, 0]))
    called = scored.y_pred == 0
    pneumonia = ~covid & (y != task.classes.index("Normal"))
    assert res.pneumonia_called_covid == pytest.approx(called[pneumonia].mean())
    assert res.covid_sensitivity == pytest.approx(called[covid].mean())
    assert sum(n for _, n in res.called_covid_by_label.values()) == 22
    assert res.called_covid_by_label["SARS"][1] == 4 and res.called_covid_by_label["COVID-19"][1] == 10
    expected = res.auroc >= MIN_AUROC and res.pneumonia_called_covid <= MAX_PNEUMONIA_CALLED_COVID
    assert res.passed is bool(expected) and passed is res.passed

    out = tmp_path / "rule.json"
    code = main(["covid-rule", "--model", str(model), "--data", str(ieee), "--out", str(out)])
    assert code == (0 if passed else 3)
    record = json.loads(out.read_text())
    assert record["passed"] is passed and record["verdict"] == ("ships" if passed else "stays withdrawn")
    assert record["rule"] == {"min_auroc": 0.8, "max_pneumonia_called_covid": 0.2}
    assert record["datasets"][0]["auroc"] == pytest.approx(res.auroc)
    table = out.with_suffix(".md").read_text()
    assert f"Verdict: {record['verdict']}" in table and "| SARS | " in table


def test_rule_refuses_a_model_without_a_covid_class(covid4_model, tmp_path):
    model, ieee = covid4_model
    cfg = json.loads((model / "config.json").read_text())
    other = tmp_path / "m"
    other.mkdir()
    for f in model.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    cfg.update(task="lung-opacity", classes=["no_opacity", "lung_opacity"], positive_class="lung_opacity")
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no COVID class"):
        covid_rule(other, [ieee])


def test_dataset_label_reaches_subgroups_of_a_real_dataset(shared_data_dir):
    samples = discover(shared_data_dir / "covid19-radiography", get_task("finding"))
    labels = {s.extra[DATASET_LABEL] for s in samples}
    assert labels == {"COVID", "Normal", "Viral_Pneumonia"}
