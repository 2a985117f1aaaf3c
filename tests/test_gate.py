"""Gate 1 ("is this a chest radiograph?") on real images kept apart from its fitting data, and in the live server."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.ood.gate import CXR_DATASETS, GATE_DIR, gate_part, load_gate, non_cxr_images, read_gate_rows, read_gray

#: Test-part chest radiographs scored per population (the gate's fit and threshold parts are never used here).
PER_POPULATION = 100


@pytest.fixture(scope="module")
def gate():
    g = load_gate()
    if g is None:
        pytest.fail(f"no gate shipped in {GATE_DIR} (run `cxr fit-gate`)")
    return g


def test_gate_artifact_is_small_and_documented(gate):
    size = sum(p.stat().st_size for p in GATE_DIR.iterdir())
    assert size < 5e6, f"gate artifact is {size / 1e6:.1f} MB"
    test = gate.info["test_part"]
    assert test["chest_radiographs"] and test["not_chest_radiographs"]
    assert np.isfinite(gate.threshold)
    # the real elevation maps are selection data: the chosen C refuses them on the threshold part
    assert gate.info["threshold_part"]["not_chest_radiographs"]["elevation_map"]["refusal_rate"] == 1.0
    assert gate.info["C"] in [c["C"] for c in gate.info["C_selection"]]


def _test_part_cxrs(data: Path) -> dict[str, list[Path]]:
    """Up to PER_POPULATION chest radiographs per population whose patient falls in the gate's test part."""
    out: dict[str, list[Path]] = {}
    for name in CXR_DATASETS:
        if not (data / name / "manifest.csv").is_file():
            continue
        for pop, key, path in read_gate_rows(data, name):
            if gate_part(key) == "test":
                out.setdefault(pop, []).append(path)
    rng = np.random.default_rng(7)
    return {
        pop: [ps[i] for i in sorted(rng.choice(len(ps), min(PER_POPULATION, len(ps)), replace=False))]
        for pop, ps in out.items()
    }


def test_chest_radiographs_of_every_population_accepted(gate, shared_data_dir):
    pops = _test_part_cxrs(shared_data_dir)
    assert {p.split("/")[0] for p in pops} == set(CXR_DATASETS), sorted(pops)
    rates = {}
    for pop, paths in pops.items():
        scores = gate.score_images([read_gray(p) for p in paths])
        rates[pop] = float((scores >= gate.threshold).mean())
    assert all(r >= 0.99 for r in rates.values()), rates


#: Kinds of package images only ever in the test part (``PART_OVERRIDES``): no fit nor choice saw one.
UNSEEN_KINDS = {"depth_map", "digit"}


def test_non_chest_radiographs_refused(gate):
    # package images of the test part (the same keys as at fit time, other crops), newly drawn pages, plots,
    # patterns and elevation maps, and the kinds never seen by any fit or choice
    imgs = [(k, key, im) for k, key, im in non_cxr_images(seed=12345, rendered=15, crops=2) if gate_part(key) == "test"]
    kinds = {k for k, _, _ in imgs}
    assert {"photo", "lfw_face", "text_page", "plot", "synthetic", "terrain"} | UNSEEN_KINDS <= kinds, kinds
    scores = gate.score_images([im for _, _, im in imgs])
    accepted = [key for (_, key, _), s in zip(imgs, scores) if s >= gate.threshold]
    assert not accepted, f"{len(accepted)}/{len(imgs)} non-radiographs accepted: {accepted}"


# -- live server ------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import copy_model_dir, find_model_dir, running_server
    from cxrtriage.store import StudyStore

    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    model = copy_model_dir(src, tmp_path_factory.mktemp("gate-model") / src.name)
    data_dir = tmp_path_factory.mktemp("gate-serve")
    store = StudyStore(data_dir)
    try:
        store.add_user("rad", "rad-password-1", "radiologist")
    finally:
        store.close()
    settings = ServeSettings(model_dir=model, data_dir=data_dir, host="127.0.0.1", port=0)
    with running_server(settings) as url:
        with httpx.Client(base_url=url, timeout=60, auth=("rad", "rad-password-1")) as client:
            yield client


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_server_refuses_a_photo_as_not_a_chest_radiograph(server):
    photo = next(im for k, key, im in non_cxr_images(rendered=0, crops=0) if k == "photo" and gate_part(key) == "test")
    r = server.post("/api/v1/predict", files={"file": ("photo.png", _png(photo), "image/png")})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "not_a_chest_radiograph" and "not a chest radiograph" in r.json()["reason"]


def test_server_never_calls_an_adult_cxr_not_a_chest_radiograph(server, shared_data_dir):
    sent = 0
    for name in ("nih-cxr14-normal-abnormal-64px", "covid19-radiography"):
        with open(shared_data_dir / name / "manifest.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if gate_part(f"{name}:{r.get('patient_id') or r['path']}") == "test"]
        for r in rows[:3]:
            data = (shared_data_dir / name / r["path"]).read_bytes()
            resp = server.post("/api/v1/predict", files={"file": (Path(r["path"]).name, data, "image/jpeg")})
            assert resp.status_code in (200, 422), resp.text
            if resp.status_code == 422:
                assert resp.json()["error"] == "outside_population", resp.text
                assert "outside the population" in resp.json()["reason"]
            sent += 1
    assert sent == 6
    info = server.get("/api/v1/model").json()
    assert info["cxr_gate"]["threshold"] == pytest.approx(load_gate().threshold)
