"""Fold logic: no patient (or duplicate group) in two folds, disjoint inner splits."""

from __future__ import annotations

import numpy as np
import pytest

from cxrtriage.data.discover import DatasetError
from cxrtriage.experiments.cv import assign_folds, build_cv_dataset, inner_split
from cxrtriage.tasks import get_task


def test_folds_keep_groups_together_and_stratify():
    rng = np.random.default_rng(0)
    groups = [f"p{i // 3}" for i in range(300)]  # 100 patients x 3 images
    y = np.array([int(int(g[1:]) % 4 == 0) for g in groups])  # 25 % positive, per patient
    fold = assign_folds(y, groups, 4, seed=0)
    assert set(fold) == {0, 1, 2, 3}
    for g in set(groups):
        assert len({fold[i] for i in range(300) if groups[i] == g}) == 1
    for f in range(4):
        share = y[fold == f].mean()
        assert 0.15 < share < 0.35
    assert (assign_folds(y, groups, 4, seed=0) == fold).all()
    assert not (assign_folds(y, groups, 4, seed=1) == fold).all()
    del rng


def test_inner_split_is_disjoint_by_group():
    groups = np.array([f"p{i // 2}" for i in range(80)])
    y = np.array([i // 2 % 2 for i in range(80)])
    fold = assign_folds(y, groups, 4, 0)
    rest = np.nonzero(fold != 0)[0]
    tr, va = inner_split(rest, y, groups, 0.2, 0)
    assert set(tr) | set(va) == set(rest)
    assert not set(groups[tr]) & set(groups[va])
    assert len(set(y[va])) == 2
    with pytest.raises(ValueError):
        inner_split(rest, y, groups, 0.9, 0)


def test_too_few_patients_for_folds():
    with pytest.raises(DatasetError):
        assign_folds([0, 1, 0, 1], ["a", "a", "b", "b"], 4, 0)


def test_cv_dataset_on_real_images(tiny_folder_dataset):
    """40 images of 8 patients: 8 groups (augmented copies are the same patient), folds respect them."""
    ds = build_cv_dataset([tiny_folder_dataset], get_task("pneumonia"))
    assert len(ds.samples) == 40
    assert ds.dedupe["n_patients"] == 8
    assert ds.dedupe["n_groups"] == 8
    fold = assign_folds(ds.targets, ds.groups, 2, 0)
    pid_folds = {}
    for s, f in zip(ds.samples, fold):
        pid_folds.setdefault(s.patient_id, set()).add(int(f))
    assert all(len(v) == 1 for v in pid_folds.values())


@pytest.mark.shared_data
def test_covid_groups_follow_kermany_patients(shared_data_dir):
    """With the Kermany set linked, COVID-set copies of one Kermany patient's images share a group."""
    cov = shared_data_dir / "covid19-radiography"
    ker = shared_data_dir / "kermany-pneumonia"
    if not (cov / "manifest.csv").is_file() or not (ker / "manifest.csv").is_file():
        pytest.skip("datasets missing")
    ds = build_cv_dataset([cov], get_task("covid"), link=[ker])
    d = ds.dedupe
    assert d["samples_with_reference_copy"] >= 1337
    assert d["n_groups"] < d["n_patients"]  # Kermany patients merged several COVID-set images
    fold = assign_folds(ds.targets, ds.groups, 4, 0)
    import csv

    rows = {str((cov / r["path"]).resolve()): r for r in csv.DictReader((cov / "manifest.csv").open())}
    ker_pid = {str((ker / r["path"]).resolve()): r["patient_id"] for r in csv.DictReader((ker / "manifest.csv").open())}
    folds_of_patient: dict[str, set] = {}
    for s, f in zip(ds.samples, fold):
        dup = rows[s.path]["kermany_duplicate"]
        for q in filter(None, dup.split(";")):
            folds_of_patient.setdefault(ker_pid[str((ker.parent / q).resolve())], set()).add(int(f))
    assert len(folds_of_patient) > 300
    assert all(len(v) == 1 for v in folds_of_patient.values())
