"""Task label mapping, including the file-name rule of pneumonia-type."""

from __future__ import annotations

import pytest

from cxrtriage.data.discover import Sample
from cxrtriage.experiments.subgroups import subgroup_value
from cxrtriage.tasks import UnknownTaskError, get_task


def test_pneumonia_type_from_file_name_and_manifest():
    t = get_task("pneumonia-type")
    assert t.map_label("PNEUMONIA", "train/PNEUMONIA/person12_bacteria_45.jpeg") == t.classes.index("bacterial")
    assert t.map_label("PNEUMONIA", "train/PNEUMONIA/person3_virus_7.jpeg") == t.classes.index("viral")
    assert t.map_label("NORMAL", "train/NORMAL/IM-0115-0001.jpeg") == t.classes.index("normal")
    assert t.map_label("PNEUMONIA", "x.jpg", {"pneumonia_type": "virus"}) == t.classes.index("viral")
    assert t.map_label("PNEUMONIA", "x.jpg") is None  # type unknown: skipped


def test_covid_and_finding_aliases():
    c = get_task("covid")
    assert c.map_label("Viral Pneumonia") == c.classes.index("Viral_Pneumonia")
    assert c.map_label("Viral_Pneumonia") == c.classes.index("Viral_Pneumonia")
    assert c.map_label("COVID-19") == c.classes.index("COVID")
    assert c.map_label("Lung_Opacity") is None
    f = get_task("finding")
    assert f.map_label("normal") == f.classes.index("no_finding")
    assert f.map_label("1_abnormal") == f.classes.index("finding")
    with pytest.raises(UnknownTaskError):
        get_task("nope")


def test_subgroup_values():
    s = Sample("/x.jpg", "finding", 1, "p1", "test", {"nih_patient_age": "63", "nih_patient_sex": "F"})
    assert subgroup_value(s, "age_band") == "60-79"
    assert subgroup_value(s, "nih_patient_sex") == "F"
    assert subgroup_value(s, "source") == "(missing)"
    assert subgroup_value(s, "split") == "test"


def test_dataset_label_kept_for_subgroups(tmp_path):
    """The dataset's own label survives the alias table: COVID and Viral Pneumonia apart, both a finding."""
    from cxrtriage.data.discover import DATASET_LABEL, discover

    (tmp_path / "manifest.csv").write_text("path,label\na.png,COVID\nb.png,Viral Pneumonia\nc.png,Normal\n")
    got = {subgroup_value(s, DATASET_LABEL): s.label for s in discover(tmp_path, get_task("finding"))}
    assert got == {"COVID": "finding", "Viral Pneumonia": "finding", "Normal": "no_finding"}
    (tmp_path / "manifest.csv").unlink()
    for label in ("Lung_Opacity", "Normal"):
        (tmp_path / "train" / label).mkdir(parents=True)
        (tmp_path / "train" / label / "x.png").write_bytes(b"")
    got = {subgroup_value(s, DATASET_LABEL): s.label for s in discover(tmp_path, get_task("lung-opacity"))}
    assert got == {"Lung_Opacity": "lung_opacity", "Normal": "no_opacity"}


@pytest.mark.parametrize(
    ("task", "label", "expected"),
    [
        ("covid", "COVID-19", "COVID"),
        ("covid", "covid-19, ards", "COVID"),
        ("covid", "No Finding", "Normal"),
        ("covid", "SARS", "Viral_Pneumonia"),
        ("covid", "Varicella", "Viral_Pneumonia"),
        ("covid", "Streptococcus", None),  # bacterial: no class in the covid task
        ("covid", "Pneumocystis", None),
        ("pneumonia", "No Finding", "NORMAL"),
        ("pneumonia", "COVID-19", "PNEUMONIA"),  # an adult COVID-19 pneumonia is a pneumonia
        ("pneumonia", "COVID-19, ARDS", "PNEUMONIA"),
        ("pneumonia", "klebsiella", "PNEUMONIA"),
        ("pneumonia", "Pneumocystis", "PNEUMONIA"),
        ("pneumonia", "SARS", "PNEUMONIA"),
        ("pneumonia", "ARDS", None),
        ("pneumonia", "Lipoid", None),
        ("pneumonia-type", "Streptococcus", "bacterial"),
        ("pneumonia-type", "COVID-19", "viral"),
        ("pneumonia-type", "Pneumocystis", None),
        ("pneumonia-type", "No Finding", "normal"),
        ("finding", "No Finding", "no_finding"),
        ("finding", "COVID-19", "finding"),
        ("finding", "legionella", "finding"),
        ("finding", "Lipoid", "finding"),
        ("finding", "Cardiomegaly", "finding"),
        ("finding", "Normal", "no_finding"),  # rsna-lungs
        ("finding", "Lung_Opacity", "finding"),
        ("finding", "No_Lung_Opacity_Not_Normal", "finding"),
        ("finding", "COVID", "finding"),  # covid19-radiography folders
        ("finding", "Viral Pneumonia", "finding"),
        ("lung-opacity", "Normal", "no_opacity"),
        ("lung-opacity", "No_Lung_Opacity_Not_Normal", "no_opacity"),  # RSNA: abnormal, but no opacity
        ("lung-opacity", "Lung_Opacity", "lung_opacity"),
        ("lung-opacity", "No Finding", "no_opacity"),
        ("lung-opacity", "COVID-19", "lung_opacity"),
        ("lung-opacity", "Klebsiella", "lung_opacity"),
        ("lung-opacity", "Pneumonia", "lung_opacity"),
        ("lung-opacity", "COVID", "lung_opacity"),
        ("lung-opacity", "Viral Pneumonia", "lung_opacity"),
        ("lung-opacity", "ARDS", None),  # may or may not show an opacity: left out
        ("lung-opacity", "Tuberculosis", None),
    ],
)
def test_ieee8023_findings(task, label, expected):
    t = get_task(task)
    got = t.map_label(label, "unsplit/x/img.jpg")
    assert (t.classes[got] if got is not None else None) == expected
    assert t.map_label(label.upper(), "unsplit/x/img.jpg") == got  # case-insensitive


@pytest.mark.parametrize("task", ["pneumonia", "pneumonia-type", "covid", "finding", "lung-opacity"])
def test_todo_is_never_labelled(task):
    t = get_task(task)
    assert t.map_label("todo", "x.jpg") is None
    assert t.map_label(" TODO ", "x.jpg") is None
    assert t.map_label("", "x.jpg") is None
