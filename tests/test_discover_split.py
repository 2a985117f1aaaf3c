"""Dataset discovery (folders, manifests), label mapping, patient ids and patient-level splits."""

import csv

import numpy as np
import pytest

from cxrtriage.data.discover import DatasetError, discover
from cxrtriage.data.patients import patient_id_from_filename
from cxrtriage.data.split import patient_kfold, train_val_from_samples
from cxrtriage.tasks import get_task


def test_patient_ids_from_kermany_names():
    assert patient_id_from_filename("a/person12_bacteria_45.jpeg") == "person12"
    assert patient_id_from_filename("person1000_virus_1681.jpg") == "person1000"
    assert patient_id_from_filename("IM-0115-0001.jpeg") == "IM-0115"
    assert patient_id_from_filename("NORMAL2-IM-0381-0001.jpeg") == "NORMAL2-IM-0381"
    assert patient_id_from_filename("00000165_005.png") == "00000165_005"


def test_folder_layout_any_depth(tiny_folder_dataset):
    samples = discover(tiny_folder_dataset, get_task("pneumonia"))
    assert len(samples) == 40
    assert {s.label for s in samples} == {"NORMAL", "PNEUMONIA"}
    assert {s.split for s in samples} == {"train"}
    assert len({s.patient_id for s in samples}) == 8


def test_manifest_relative_paths_and_columns(tmp_path, example_paths):
    m = tmp_path / "manifest.csv"
    with m.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split", "patient_id", "sex"])
        for i, p in enumerate(example_paths):
            w.writerow([p, p.name.split("_")[0].lower(), "test" if i % 2 else "train", f"pt{i}", "F"])
    samples = discover(tmp_path, get_task("pneumonia"))
    assert len(samples) == len(example_paths)
    assert samples[0].extra["sex"] == "F" and samples[0].patient_id == "pt0"
    assert len(discover(m, get_task("pneumonia"), split="test")) == len(example_paths) // 2


def test_pneumonia_type_from_file_names(tiny_folder_dataset):
    samples = discover(tiny_folder_dataset, get_task("pneumonia-type"))
    by_label = {s.label for s in samples}
    assert by_label == {"normal", "bacterial", "viral"}
    assert all(("virus" in s.path) == (s.label == "viral") for s in samples)


def test_missing_dataset_and_bad_manifest(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        discover(tmp_path / "nothing", get_task("pneumonia"))
    bad = tmp_path / "manifest.csv"
    bad.write_text("file,class\na.png,NORMAL\n")
    with pytest.raises(DatasetError, match="missing column"):
        discover(tmp_path, get_task("pneumonia"))


def test_patient_level_split_keeps_patients_together():
    rng = np.random.default_rng(0)
    groups = [f"p{i // 3}" for i in range(300)]  # 100 patients, 3 images each
    targets = [int(g[1:]) % 4 == 0 for g in groups]
    folds = patient_kfold(targets, groups, 4, seed=1)
    seen = set()
    for tr, va in folds:
        val_groups = {groups[i] for i in va}
        assert not val_groups & {groups[i] for i in tr}
        assert not val_groups & seen
        seen |= val_groups
        assert 0.15 < np.mean([targets[i] for i in va]) < 0.35  # stratified around 25 %
    assert len(seen) == 100
    _ = rng


def test_train_val_split_excludes_test_and_respects_patients(kermany_dir):
    samples = discover(kermany_dir, get_task("pneumonia"))
    tr, va = train_val_from_samples(samples, 0.15, seed=0)
    assert len(tr) + len(va) == len(samples)
    assert not {s.patient_id for s in tr} & {s.patient_id for s in va}
    frac = len(va) / len(samples)
    assert 0.10 < frac < 0.20
    va_pos = np.mean([s.target for s in va])
    tr_pos = np.mean([s.target for s in tr])
    assert abs(va_pos - tr_pos) < 0.05


def test_recorded_validation_paths_follow_the_dataset(tmp_path):
    """A model folder's recorded split stays usable when the dataset moves (paths relative to the dataset)."""
    from cxrtriage.data.split import recorded_validation_paths

    data = tmp_path / "moved" / "kermany"
    (data / "train" / "NORMAL").mkdir(parents=True)
    model = tmp_path / "model"
    model.mkdir()
    rel = ["train/NORMAL/IM-0001-0001.jpeg", "train/NORMAL/IM-0002-0001.jpeg"]
    got_data, paths = recorded_validation_paths(model, "/elsewhere/kermany", rel, data)
    assert got_data == str(data) and paths == [str((data / p).resolve()) for p in rel]
    # the recorded dataset location is used when none is given
    assert recorded_validation_paths(model, str(data), rel[:1])[1] == [str((data / rel[0]).resolve())]
    with pytest.raises(ValueError, match="no validation images"):
        recorded_validation_paths(model, str(data), [])
    with pytest.raises(FileNotFoundError, match="no validation split recorded"):
        recorded_validation_paths(model, str(data), None)
