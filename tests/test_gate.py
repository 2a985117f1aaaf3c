"""Gate 1 ("is this a chest radiograph?") on real images kept apart from its fitting data, and in the live server."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.ood.gate import (
    CXR_DATASETS,
    GATE_DIR,
    GATE_FEATURES_DIR,
    GATE_FEATURES_JSON,
    GATE_FEATURES_ONNX,
    GateFeatures,
    cxr_samples,
    gate_part,
    load_gate,
    non_cxr_images,
    read_gate_rows,
    read_gray,
)

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


# -- the feature extractor in ONNX Runtime ---------------------------------------
#: Scores this close to a gate's threshold may change side with float noise (one image's score *is* gate 1's
#: threshold: the threshold is a quantile of the threshold part's scores); outside it no decision may change.
TIE = 1e-3


def test_shipped_feature_extractor_is_small_and_documented():
    onnx_file = GATE_FEATURES_DIR / GATE_FEATURES_ONNX
    assert onnx_file.stat().st_size <= 25 * 2**20, f"{onnx_file.stat().st_size / 2**20:.1f} MB"
    info = json.loads((GATE_FEATURES_DIR / GATE_FEATURES_JSON).read_text())
    assert info["sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert info["output"] == {"name": "features", "shape": ["batch", 1280], "dtype": "float32"}
    assert info["check_vs_pytorch"]["max_abs_feature_difference"] < 1e-3


def test_onnx_gate_features_equal_pytorch_and_keep_every_decision(gate, shared_data_dir, example_paths):
    """ONNX Runtime features = the PyTorch network's on real chest radiographs of every source and on
    non-radiographs; both gates' scores and decisions unchanged."""
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from cxrtriage.ood.gate import TorchGateFeatures
    from cxrtriage.ood.population import load_population_gate

    rows = cxr_samples(shared_data_dir, per_set=30, seed=11)
    assert {pop.split("/")[0] for pop, _, _ in rows} == set(CXR_DATASETS)
    images = [read_gray(p) for p in example_paths] + [read_gray(p) for _, _, p in rows]
    n_cxr = len(images)
    images += [im for _, _, im in non_cxr_images(seed=5, rendered=3, crops=0)][::4]
    ref = TorchGateFeatures()(images)  # the base install's fallback (torch_gate_features)
    got = GateFeatures(threads=1)(images)
    assert got.shape == ref.shape == (len(images), 1280) and got.dtype == np.float32
    assert float(np.abs(got - ref).max()) < 1e-3
    assert np.array_equal(GateFeatures(threads=1)(images[:5], batch_size=2), got[:5])  # batching changes nothing
    st, so = gate.score(ref), gate.score(got)
    assert float(np.abs(st - so).max()) < 1e-3
    clear = np.abs(st - gate.threshold) > TIE
    assert np.array_equal((st >= gate.threshold)[clear], (so >= gate.threshold)[clear])
    assert (so[:n_cxr] >= gate.threshold).mean() >= 0.97 and (so[n_cxr:] < gate.threshold).all()
    population = load_population_gate()
    assert population is not None
    from cxrtriage.segment.runtime import load_segmenter

    masks = load_segmenter().segment_batch(images) if population.uses_lung_shape else None
    (pt, sp), (po, sq) = population.population_of(ref, masks), population.population_of(got, masks)
    assert float(np.abs(sp - sq).max()) < 1e-3
    clear = np.abs(sp - population.threshold) > TIE
    assert [a for a, c in zip(pt, clear) if c] == [b for b, c in zip(po, clear) if c]


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
