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
