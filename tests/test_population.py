"""Gate 2 (population applicability) and several models behind one upload, on real images kept apart from the
gates' fitting data; gate 1 in the Python API and ``cxr predict``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.config import ModelConfig
from cxrtriage.models.bundle import shipped_models, zoo_dir
from cxrtriage.ood.gate import GateFeatures, gate_part, non_cxr_images, read_gray
from cxrtriage.ood.population import POPULATION_DIR, load_population_gate, population_rows, population_warning
from cxrtriage.segment.runtime import load_segmenter

httpx = pytest.importorskip("httpx")

#: Test-part images per source sent to the server (the gates' fit and threshold parts are never used here).
PER_SOURCE = 6
PEDIATRIC_WARNING = "outside the validated population: pediatric model, adult image"
ADULT_WARNING = "outside the validated population: adult model, pediatric image"


@pytest.fixture(scope="module")
def pop_gate():
    g = load_population_gate()
    if g is None:
        pytest.fail(f"no population gate shipped in {POPULATION_DIR} (run `cxr fit-population`)")
    return g


def _test_part(data: Path, per_source: int, seed: int = 11) -> dict[str, list[tuple[str, Path]]]:
    """Up to ``per_source`` images per source whose patient (or file) falls in the gates' test part."""
    by_source: dict[str, list[tuple[str, Path]]] = {}
    for pop, src, key, path in population_rows(data):
        if gate_part(key) == "test":
            by_source.setdefault(src, []).append((pop, path))
    rng = np.random.default_rng(seed)
    return {
        s: [rows[i] for i in sorted(rng.choice(len(rows), min(per_source, len(rows)), replace=False))]
        for s, rows in by_source.items()
    }


def test_population_gate_is_small_documented_and_routes_test_images(pop_gate, shared_data_dir):
    size = sum(p.stat().st_size for p in POPULATION_DIR.iterdir())
    assert size < 5e6, f"population gate artifact is {size / 1e6:.1f} MB"
    assert "source confound" in pop_gate.info["caveat"] and pop_gate.info["positive"] == "pediatric"
    parts = _test_part(shared_data_dir, 40)
    assert {s.split("/")[0] for s in parts} == {
        "kermany-pneumonia",
        "covid19-radiography",
        "nih-cxr14-normal-abnormal-64px",
        "ieee8023-cxr",
    }
    images = [read_gray(p) for rows in parts.values() for _, p in rows]
    feats = GateFeatures()(images)
    masks = load_segmenter().segment_batch(images) if pop_gate.uses_lung_shape else None
    called, _ = pop_gate.population_of(feats, masks)
    if pop_gate.uses_lung_shape:
        with pytest.raises(ValueError, match="one lung mask per image"):
            pop_gate.population_of(feats)
    truth = [pop for rows in parts.values() for pop, _ in rows]
    right = np.array(called) == np.array(truth)
    src = [s for s, rows in parts.items() for _ in rows]
    rates = {s: float(right[np.array(src) == s].mean()) for s in parts}
    assert all(r >= 0.9 for r in rates.values()), rates


def test_population_gate_was_fitted_on_the_shipped_segmenters_masks(pop_gate):
    """Gate 2 reads lung-shape statistics: a segmenter changed after the fit (even re-quantised under the same
    version string) feeds it other inputs than it was fitted on, so the fit records the ONNX checksum."""
    from cxrtriage.segment.bundle import SegmenterBundle
    from cxrtriage.segment.runtime import shipped_segmenter_dir

    if not pop_gate.uses_lung_shape:
        pytest.skip("gate 2 without lung shape")
    shipped = SegmenterBundle.load(shipped_segmenter_dir())
    assert pop_gate.info["segmenter"] == shipped.config.version
    assert pop_gate.info["segmenter_onnx_sha256"] == shipped.onnx_sha256, "refit gate 2: cxr fit-population"


def test_population_warning_and_config():
    assert population_warning("pediatric", "adult") == PEDIATRIC_WARNING
    assert population_warning("adult", "pediatric") == ADULT_WARNING
    assert population_warning("adult", "adult") is None and population_warning(None, "adult") is None
    assert population_warning("pediatric", None) is None
    with pytest.raises(ValueError, match="population"):
        ModelConfig(arch="a", task="pneumonia", classes=["NORMAL", "PNEUMONIA"], image_size=8, population="elderly")


# -- the live server with every shipped model ------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import add_user, running_server

    data_dir = tmp_path_factory.mktemp("population-serve")
    add_user(data_dir, "rad", "rad-password-1")
    settings = ServeSettings(model_dir=None, data_dir=data_dir, port=0)  # every shipped model
    with running_server(settings) as url:
        with httpx.Client(base_url=url, timeout=60, auth=("rad", "rad-password-1")) as client:
            yield client, data_dir


def test_adult_images_get_adult_applicable_results(server, shared_data_dir):
    """Adult images: the adult model applies, the pediatric models are shown with the warning; and the reverse."""
    client, data_dir = server
    models = [m["name"] for m in client.get("/api/v1/models").json()]
    assert sorted(models) == shipped_models()  # every shipped model, in a stable order
    populations = {m: ModelConfig.load(zoo_dir() / m / "config.json").population for m in models}
    wrong: list[str] = []
    accepted = 0
    for src, rows in _test_part(shared_data_dir, PER_SOURCE).items():
        for pop, path in rows:
            r = client.post("/api/v1/predict", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
            assert r.status_code == 200, (src, r.text)  # never "not a chest radiograph", never refused
            accepted += 1
            j = r.json()
            assert [x["model_name"] for x in j["results"]] == models
            for res in j["results"]:
                expect_ok = populations[res["model_name"]] == pop
                if res["applicable"] != expect_ok:
                    wrong.append(f"{src}:{path.name}")
                elif not expect_ok:
                    warning = PEDIATRIC_WARNING if pop == "adult" else ADULT_WARNING
                    assert res["population_warning"] == warning
                    assert warning in j["report"]["text"]
            applicable = [x for x in j["results"] if x["applicable"]]
            assert j["triage"] == ("finding" if any(x["flag"] for x in applicable) else "no_finding")
            assert j["priority"] == pytest.approx(max(x["priority"] for x in applicable))
            assert j["report"]["flagged_by"] == [x["model_name"] for x in applicable if x["flag"]]
    assert len(set(wrong)) <= 2, wrong  # at most two of the 36 images routed to the other population
    # the page shows the warnings; the heatmap of each model is there
    sid = j["study_id"]
    page = client.get(f"/studies/{sid}").text
    for res in j["results"]:
        assert f'id="result-{res["model_name"]}"' in page
        if res["heatmap_url"]:
            assert client.get(res["heatmap_url"]).status_code == 200
        assert client.get(res["card_url"]).text.startswith("---")
    import sqlite3

    con = sqlite3.connect(data_dir / "studies.sqlite3")
    try:
        assert con.execute("SELECT count(*) FROM studies").fetchone()[0] == accepted
        assert con.execute("SELECT count(*) FROM model_results").fetchone()[0] == len(models) * accepted
    finally:
        con.close()


# -- gate 1 in the Python API and cxr predict ---------------------------------------
def _photo() -> np.ndarray:
    return next(im for k, key, im in non_cxr_images(rendered=0, crops=0) if k == "photo" and gate_part(key) == "test")


def test_python_api_refuses_non_radiographs_with_the_reason(example_paths):
    import cxrtriage

    model = cxrtriage.load_model("pneumonia")
    photo = _photo()
    preds = model.predict([photo, example_paths[0]])
    assert preds[0].refused and "not a chest radiograph" in preds[0].refused
    assert preds[1].refused is None and "refused" not in preds[1].to_dict()
    assert preds[0].to_dict()["refused"] == preds[0].refused
    assert all(p.refused is None for p in model.predict([photo], cxr_gate=False))


def test_cxr_predict_reports_refused_images(tmp_path, example_paths):
    photo = tmp_path / "photo.png"
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="PNG")
    photo.write_bytes(buf.getvalue())
    cmd = [sys.executable, "-m", "cxrtriage.cli", "predict", str(photo), str(example_paths[0]), "--no-gradcam"]
    out = subprocess.run(cmd + ["--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(f"{photo}: REFUSED: not a chest radiograph"), lines
    assert lines[1].startswith(str(example_paths[0])) and "REFUSED" not in lines[1]


def test_gate_switches(tmp_path, shared_data_dir):
    """--no-cxr-gate / --no-population-gate (typed settings): nothing refused, every result applicable."""
    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import ServeSettings

    settings = ServeSettings(model_dir=None, data_dir=tmp_path, cxr_gate=False, population_gate=False)
    service = StudyService(settings)
    assert service.engine.gate is None and service.engine.population_gate is None
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="PNG")
    photo, _, _ = service.predict(buf.getvalue(), "photo.png")  # gate 1 off: scored, not refused
    (adult,) = (p for s, rows in _test_part(shared_data_dir, 1).items() if s.startswith("nih") for _, p in rows)
    rec, _, timings = service.predict(adult.read_bytes(), adult.name, source="pacs")
    assert rec.source == "pacs" and timings["gates_ms"] == 0
    for r in (photo, rec):
        assert len(r.results) == len(shipped_models())
        assert all(x.applicable and x.population_warning is None for x in r.results)
    service.store.close()
