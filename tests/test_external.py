"""External validation on real images: multi-dataset ``cxr evaluate``, leave-one-dataset-out ``cxr cv``
and the external section of a model bundle and card."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from cxrtriage.cards.model_card import render_card
from cxrtriage.cli.main import main
from cxrtriage.data.discover import DatasetError, Sample
from cxrtriage.experiments.cv import CVDataset, group_values, leave_one_group_out
from cxrtriage.experiments.evaluate import dataset_names
from cxrtriage.models.bundle import Evaluation, ExternalValidation, ModelBundle, zoo_dir


def tiny_manifest(source: Path, folder: Path, labels: dict[str, int]) -> Path:
    """Write ``folder/manifest.csv`` with the first ``labels[label]`` rows of each label of ``source``'s manifest.

    Paths point back at the real images (absolute); all other columns are kept.
    """
    with (source / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    picked: list[dict[str, str]] = []
    for label, n in labels.items():
        chosen = [r for r in rows if r["label"] == label and r.get("split", "") != "test"][:n]
        assert len(chosen) == n, f"{source}: only {len(chosen)} images labelled {label}"
        picked += chosen
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "manifest.csv"
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in picked:
            w.writerow({**r, "path": str((source / r["path"]).resolve())})
    return out


@pytest.fixture
def two_sets(shared_data_dir, tmp_path) -> tuple[Path, Path]:
    """20 Kermany images (10/10) and 20 ieee8023 images (No Finding 7, COVID-19 8, Klebsiella 5, todo 3 left out)."""
    kermany = tiny_manifest(
        shared_data_dir / "kermany-pneumonia", tmp_path / "kermany-pneumonia", {"NORMAL": 10, "PNEUMONIA": 10}
    )
    ieee = tiny_manifest(
        shared_data_dir / "ieee8023-cxr",
        tmp_path / "ieee8023-cxr",
        {"No Finding": 7, "COVID-19": 8, "Klebsiella": 5, "todo": 3},
    )
    return kermany, ieee


@pytest.mark.shared_data
def test_evaluate_several_datasets_writes_one_row_each(two_sets, tmp_path):
    kermany, ieee = two_sets
    out = tmp_path / "ev"
    assert main(["evaluate", "--data", str(kermany), str(ieee), "--out", str(out), "--quiet"]) == 0
    with (out / "external.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["dataset"] for r in rows] == ["kermany-pneumonia", "ieee8023-cxr"]
    assert [int(r["n"]) for r in rows] == [20, 20]  # the 3 'todo' images are left out
    assert (int(rows[1]["n_NORMAL"]), int(rows[1]["n_PNEUMONIA"])) == (7, 13)
    for r in rows:
        assert float(r["auroc_ci_low"]) <= float(r["auroc"]) <= float(r["auroc_ci_high"])
    table = json.loads((out / "external.json").read_text())
    assert [t["n"] for t in table] == [20, 20] and table[1]["report"]["class_counts"] == {"NORMAL": 7, "PNEUMONIA": 13}
    md = (out / "external.md").read_text()
    assert "| kermany-pneumonia | 20 |" in md and "| ieee8023-cxr | 20 |" in md
    for name in ("kermany-pneumonia", "ieee8023-cxr"):  # today's per-dataset outputs, one folder each
        m = json.loads((out / name / "metrics.json").read_text())
        assert m["n"] == 20 and (out / name / "predictions.csv").is_file()
    # one dataset: the files land in --out itself, as before
    single = tmp_path / "single"
    assert main(["evaluate", "--data", str(ieee), "--out", str(single), "--quiet"]) == 0
    assert (single / "metrics.json").is_file() and not (single / "external.csv").exists()


@pytest.mark.shared_data
def test_cv_leave_one_dataset_out(shared_data_dir, tmp_path):
    kermany = tiny_manifest(
        shared_data_dir / "kermany-pneumonia", tmp_path / "k" / "kermany", {"NORMAL": 12, "PNEUMONIA": 12}
    )
    ieee = tiny_manifest(
        shared_data_dir / "ieee8023-cxr", tmp_path / "i" / "ieee", {"No Finding": 7, "COVID-19": 10, "Klebsiella": 7}
    )
    # two Kermany images also appear in the second set: their duplicate groups span both datasets
    with kermany.open(newline="") as fh:
        copies = list(csv.DictReader(fh))[:2]
    with ieee.open(newline="") as fh:
        cols = list(csv.DictReader(fh).fieldnames or [])
    with ieee.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", restval="").writerows(copies)
    out = tmp_path / "cv"
    argv = ["cv", "--task", "pneumonia", "--arch", "cnn4", "--image-size", "64", "--epochs", "1", "--threads", "1"]
    argv += ["--data", str(kermany), "--data", str(ieee), "--group-by", "dataset", "--out", str(out)]
    assert main(argv + ["--n-boot", "50", "--quiet"]) == 0
    res = json.loads((out / "cv.json").read_text())
    assert res["held_out_groups"] == ["ieee", "kermany"] and res["k"] == 2
    assert [f["held_out"] for f in res["folds"]] == ["ieee", "kermany"]
    assert [f["n_val"] for f in res["folds"]] == [26, 24]
    assert [f["n_dropped_leaking"] for f in res["folds"]] == [2, 2]  # never trained on a held-out image's copy
    assert res["pooled"]["n"] == 50
    with (out / "folds.csv").open() as fh:
        folds = list(csv.DictReader(fh))
    assert {(r["held_out"], r["fold"]) for r in folds} == {("ieee", "0"), ("kermany", "1")}
    assert "held-out dataset" in (out / "cv.md").read_text()


@pytest.mark.shared_data
def test_external_section_added_to_a_model_copy(two_sets, tmp_path):
    _, ieee = two_sets
    model = tmp_path / "model"
    shutil.copytree(zoo_dir() / "pneumonia-efficientnet_lite0", model)
    before = ModelBundle.load(model)
    assert before.evaluation is not None
    before.evaluation.external = []  # the shipped model has external sets; start from a bundle without any
    before.save(model)
    assert main(["external", "--model", str(model), "--data", str(ieee), "--n-boot", "50"]) == 0
    after = ModelBundle.load(model)
    assert after.evaluation is not None
    assert after.evaluation.validation == before.evaluation.validation  # kept, not recomputed
    (ext,) = after.evaluation.external
    assert (
        ext.name == "ieee8023-cxr" and ext.report.n == 20 and ext.report.class_counts == {"NORMAL": 7, "PNEUMONIA": 13}
    )
    readme = (model / "README.md").read_text()
    assert "### In-source vs out-of-source" in readme and "| ieee8023-cxr (external) | 20 |" in readme
    assert "| validation (in-source) |" in readme and "No external validation" not in readme
    meta = yaml.safe_load(readme.split("---\n")[1])
    splits = [r["dataset"]["split"] for r in meta["model-index"][0]["results"]]
    assert splits.count("external") == 1
    # again with --keep-validation: replaced by name, not duplicated
    assert main(["card", "--model", str(model), "--external", str(ieee), "--keep-validation", "--n-boot", "20"]) == 0
    again = ModelBundle.load(model)
    assert again.evaluation is not None and [e.name for e in again.evaluation.external] == ["ieee8023-cxr"]
    assert again.evaluation.external[0].report.n_boot == 20


def test_card_without_external_says_so():
    bundle = ModelBundle.load(zoo_dir() / "pneumonia-efficientnet_lite0")
    assert bundle.evaluation is not None
    bundle.evaluation.external = []
    text = render_card(bundle)
    assert "No external validation: the figures above are in-source upper bounds." in text
    assert "## Reporting checklist" in text and "external testing" not in text


def test_external_validation_round_trip_and_old_bundles():
    ev = ModelBundle.load(zoo_dir() / "pneumonia-efficientnet_lite0").evaluation
    assert ev is not None
    d = ev.to_dict()
    d.pop("external")  # bundle.json written before this field existed
    old = Evaluation.from_dict(d, "old")
    assert old.external == []
    ext = ExternalValidation("x", "/data/x", "desc", ev.validation, skipped=2)
    old.external = [ext]
    assert Evaluation.from_dict(old.to_dict()).external == [ext]
    with pytest.raises(Exception, match="unknown key"):
        ExternalValidation.from_dict({**ext.to_dict(), "bogus": 1}, "b.json")


def test_group_values_and_leave_one_group_out():
    samples = [Sample(f"/d/{i}.jpg", "NORMAL", 0, f"p{i}", None, {"source": s}) for i, s in enumerate("abab")]
    ds = CVDataset(samples, ["t"] * 4, [f"g{i}" for i in range(4)], None, ["/d/a", "/e/a"], ["a", "a-2", "a", "a-2"])
    assert group_values(ds, "dataset") == ["a", "a-2", "a", "a-2"]
    assert group_values(ds, "source") == ["a", "b", "a", "b"]
    fold, names = leave_one_group_out(group_values(ds, "source"))
    assert names == ["a", "b"] and fold.tolist() == [0, 1, 0, 1]
    with pytest.raises(DatasetError, match="column 'site'"):
        group_values(ds, "site")
    with pytest.raises(DatasetError, match="at least 2"):
        leave_one_group_out(["a", "a"])
    assert dataset_names(["/x/set/manifest.csv", "/y/set", "/z/other"]) == ["set", "set-2", "other"]


@pytest.mark.shared_data
def test_score_dataset_leaves_out_images_flagged_in_a_manifest_column(two_sets):
    from cxrtriage.experiments.evaluate import score_dataset
    from cxrtriage.inference.predictor import Predictor

    _, ieee = two_sets
    with ieee.open(newline="") as fh:
        flagged = sum(
            1 for r in csv.DictReader(fh) if r["label"] != "todo" and r["covid19_radiography_duplicate"].strip()
        )
    assert flagged > 0, "the fixture should hold images that are also in covid19-radiography"
    predictor = Predictor(zoo_dir() / "pneumonia-efficientnet_lite0")
    full = score_dataset(predictor, ieee, n_boot=0)
    kept = score_dataset(predictor, ieee, n_boot=0, exclude_where=["covid19_radiography_duplicate"])
    assert (full.report.n, full.excluded) == (20, 0)
    assert (kept.report.n, kept.excluded) == (20 - flagged, flagged)
    assert not any(s.extra.get("covid19_radiography_duplicate") for s in kept.samples)
    with pytest.raises(DatasetError, match="no_such_column"):
        score_dataset(predictor, ieee, n_boot=0, exclude_where=["no_such_column"])
    by_label = score_dataset(predictor, ieee, n_boot=0, exclude_where=["dataset_label=klebsiella"])
    assert (by_label.report.n, by_label.excluded) == (15, 5)  # the 5 Klebsiella images, matched case-insensitively
    assert {s.extra["dataset_label"] for s in by_label.samples} == {"No Finding", "COVID-19"}
    no_column = score_dataset(predictor, ieee, n_boot=0, exclude_where=["no_such_column=x"])
    assert (no_column.report.n, no_column.excluded) == (20, 0)  # a COLUMN=VALUE rule is no error where absent
