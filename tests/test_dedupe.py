"""Duplicate detection within and across datasets, and leak-free groups."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.data.dedupe import (
    DEFAULT_MAX_DISTANCE,
    content_hash,
    dhash,
    duplicate_pairs,
    image_hashes,
    leak_free_groups,
    list_images,
)
from cxrtriage.data.discover import discover
from cxrtriage.tasks import get_task


def test_dhash_survives_resize_and_reencoding(example_paths, tmp_path):
    img = np.asarray(Image.open(example_paths[0]).convert("L"))
    big = np.asarray(Image.fromarray(img).resize((300, 300)))
    Image.fromarray(big).save(tmp_path / "copy.jpg", quality=80)
    again = np.asarray(Image.open(tmp_path / "copy.jpg"))
    d_same = int((dhash(img) != dhash(again)).sum())
    assert d_same <= DEFAULT_MAX_DISTANCE
    other = np.asarray(Image.open(example_paths[-1]).convert("L"))
    assert int((dhash(img) != dhash(other)).sum()) > DEFAULT_MAX_DISTANCE
    assert content_hash(img) == content_hash(img.copy()) != content_hash(other)


def test_copies_across_sets_share_a_group(example_paths, tmp_path):
    """A re-encoded, resized copy in another folder under another name joins the original's group."""
    a = tmp_path / "setA" / "train"
    b = tmp_path / "setB" / "train"
    for d in ("NORMAL", "PNEUMONIA"):
        (a / d).mkdir(parents=True)
        (b / d).mkdir(parents=True)
    for p in example_paths:
        label, _, name = p.name.partition("_")
        shutil.copy(p, a / label / name)
    # setB: copies of two setA images under unrelated names, at another size and format
    src = sorted((a / "PNEUMONIA").iterdir())[:2]
    for k, p in enumerate(src):
        Image.open(p).convert("L").resize((256, 256)).save(b / "PNEUMONIA" / f"copy{k}.png")
    shutil.copy(sorted((a / "NORMAL").iterdir())[0], b / "NORMAL" / "other.jpg")  # byte copy
    task = get_task("pneumonia")
    samples = discover(a.parent, task) + discover(b.parent, task)
    tags = ["A"] * 8 + ["B"] * 3
    groups, rep = leak_free_groups(samples, tags)
    by_name = {Path(s.path).name: g for s, g in zip(samples, groups)}
    assert by_name["copy0.png"] == by_name[src[0].name]
    assert by_name["copy1.png"] == by_name[src[1].name]
    assert rep.within_pairs >= 3
    assert rep.n_groups == 8  # 8 originals, copies merged into them


def test_reference_dataset_passes_patient_ids(example_paths, tmp_path):
    """Images without patient ids get the patient of their copy in a reference set."""
    ref = tmp_path / "ref" / "train" / "PNEUMONIA"
    pool = tmp_path / "pool" / "train" / "PNEUMONIA"
    ref.mkdir(parents=True)
    pool.mkdir(parents=True)
    p = [q for q in example_paths if "PNEUMONIA" in q.name][0]
    img = Image.open(p).convert("L")
    img.save(ref / "person7_virus_1.png")
    img.rotate(0.5).save(ref / "person7_virus_2.png")  # second image of patient 7
    img.resize((240, 240)).save(pool / "a.png")  # copy of image 1
    img.rotate(0.5).resize((250, 250)).save(pool / "b.png")  # copy of image 2
    samples = discover(pool.parent.parent, get_task("pneumonia"))
    assert {s.patient_id for s in samples} == {"a", "b"}
    groups, rep = leak_free_groups(samples, references={"ref": list_images(ref.parent.parent)})
    assert groups[0] == groups[1]
    assert rep.samples_with_reference_copy == 2


@pytest.mark.shared_data
def test_covid_viral_pneumonia_found_in_kermany(shared_data_dir):
    """The documented overlap (``kermany_duplicate``) is recovered from pixels alone."""
    cov = shared_data_dir / "covid19-radiography"
    ker = shared_data_dir / "kermany-pneumonia"
    if not (cov / "manifest.csv").is_file() or not (ker / "manifest.csv").is_file():
        pytest.skip("covid19-radiography or kermany-pneumonia missing")
    rows = list(csv.DictReader((cov / "manifest.csv").open()))
    viral = [r for r in rows if r["label"] == "Viral_Pneumonia"][:150]
    normal = [r for r in rows if r["label"] == "COVID"][:50]
    truth = {}
    for r in viral:
        truth[str((cov / r["path"]).resolve())] = {
            str((ker.parent / q).resolve()) for q in r["kermany_duplicate"].split(";") if q
        }
    pool = [str((cov / r["path"]).resolve()) for r in viral + normal]
    ref = [p for p, _ in list_images(ker)]
    wanted = set().union(*truth.values())
    # reference subset: all true matches + 300 unrelated Kermany images
    ref_sub = sorted(wanted) + [p for p in ref if p not in wanted][:300]
    pairs = duplicate_pairs(image_hashes(pool), image_hashes(ref_sub))
    found: dict[str, set] = {}
    for i, j, _ in pairs:
        found.setdefault(pool[i], set()).add(ref_sub[j])
    hit = sum(1 for p, t in truth.items() if t and t & found.get(p, set()))
    n_true = sum(1 for t in truth.values() if t)
    assert hit == n_true  # every documented copy is found
    false = sum(len(f - truth.get(p, set())) for p, f in found.items())
    assert false <= 0.02 * len(pool)  # and almost nothing else
