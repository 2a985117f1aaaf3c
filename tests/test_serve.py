"""The real server (uvicorn on a free loopback port) with real CXR images and DICOM files made from them."""

from __future__ import annotations

import io
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage import DISCLAIMER
from cxrtriage.data.dicom import write_dicom
from cxrtriage.data.io import read_image
from cxrtriage.serve.testing import copy_model_dir, find_model_dir, running_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

#: Server accounts of these tests: (name, password, role).
RAD = ("rad", "rad-password-1", "radiologist")
UPLOADER = ("up", "up-password-1", "uploader")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    return copy_model_dir(src, tmp_path_factory.mktemp("served") / src.name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-data")


def _settings(model_dir, data_dir, **kw):
    from cxrtriage.serve.settings import ServeSettings

    _with_users(data_dir, kw.get("database_url"))
    return ServeSettings(model_dir=model_dir, data_dir=data_dir, host="127.0.0.1", port=0, **kw)


def _with_users(data_dir, database_url=None) -> None:
    """The radiologist and the uploader of these tests in the store (once)."""
    from cxrtriage.store import StudyStore

    store = StudyStore(data_dir, database_url)
    try:
        for name, pw, role in (RAD, UPLOADER):
            if store.get_user(name) is None:
                store.add_user(name, pw, role)
    finally:
        store.close()


def _client(url: str, who: tuple[str, str, str] = RAD):
    """An HTTP client that logs in with HTTP Basic as ``who``."""
    return httpx.Client(base_url=url, timeout=60, auth=(who[0], who[1]))


@pytest.fixture(scope="module")
def server(model_dir, data_dir):
    with running_server(_settings(model_dir, data_dir, max_upload_mb=3)) as url:
        with _client(url) as client:
            yield client


def _post(client, name: str, data: bytes, ctype: str = "application/octet-stream"):
    return client.post("/api/v1/predict", files={"file": (name, data, ctype)})


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG") if mode else Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _dicom(img: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    write_dicom(buf, img, **kw)
    return buf.getvalue()


def _r0(j: dict) -> dict:
    """The first (here: the only) model's result of a study answer."""
    return j["results"][0]


def _check_study(j: dict, classes: list[str]) -> None:
    r = _r0(j)
    assert set(r["probabilities"]) == set(classes)
    assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
    assert r["label"] in classes
    assert j["triage"] in ("no_finding", "finding") and j["triage"] == r["triage"] and r["applicable"]
    assert j["priority"] == pytest.approx(r["priority"])
    assert j["report"]["status"] in ("draft", "signed")
    assert j["report"]["disclaimer"] == DISCLAIMER
    assert r["model_version"] and j["source"] == "upload"
    assert j["request_timings"]["total_ms"] > 0


def test_study_out_is_built_from_the_stored_study():
    """StudyOut reads the Study's columns (two renamed) and its ModelResult rows; computes only the URLs."""
    from cxrtriage.report import build_report
    from cxrtriage.serve.schemas import StudyOut
    from cxrtriage.serve.service import study_out
    from cxrtriage.store import ModelResult, Study

    res = ModelResult(
        study_id="00000000000000ab",
        position=0,
        model_name="m",
        model_version="v",
        task="pneumonia",
        backend="torch",
        label="NORMAL",
        probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1},
        threshold=0.4,
        positive_class="PNEUMONIA",
        flag=False,
        priority=0.1,
        applicable=True,
        population_warning=None,
        heat_class=None,
        cam=None,
        ood_score=None,
    )
    report = build_report(results=[{**res.to_dict(), "triage": "no_finding"}], study_id="00000000000000ab")
    st = Study(
        id="00000000000000ab",
        received_at="2026-01-01T00:00:00.000+00:00",
        sha256="ab" * 32,
        model_set="k",
        source="upload",
        source_format="dicom",
        image_file="images/ab/x.png",
        width=3,
        height=2,
        triage="no_finding",
        priority=0.1,
        dicom_meta={"Modality": "DX"},
        report=report,
        report_status="draft",
        signed_by=None,
        signed_at=None,
        timings={"total_ms": 2.0},
        results=[res],
    )
    out = StudyOut.model_validate(st)
    assert out.study_id == st.id and out.dicom == {"Modality": "DX"} and out.priority == 0.1
    (r,) = out.results
    assert r.heatmap_class is None and r.heatmap_url is None and r.triage == "no_finding" and r.model_name == "m"
    assert r.annotated_image_url == "/api/v1/studies/00000000000000ab/annotated.png?model=m"
    assert r.card_url == "/api/v1/models/m/card"
    assert (
        out.report_urls["pdf"] == "/api/v1/studies/00000000000000ab/report.pdf"
        and out.page_url == "/studies/00000000000000ab"
    )
    d = study_out(st)
    assert StudyOut.model_validate(d).model_dump() == d  # the API dict validates against its own schema unchanged
    res.cam, res.heat_class = [[0.5]], "NORMAL"
    assert study_out(st)["results"][0]["heatmap_url"] == "/api/v1/studies/00000000000000ab/heatmap.png?model=m"


def test_system_endpoints(server):
    h = server.get("/api/v1/health")
    assert h.status_code == 200 and h.json()["status"] == "ok" and h.json()["database"]
    m = server.get("/api/v1/model").json()
    assert m["backend"] == "onnxruntime" and m["onnx_sha256"]
    assert m["disclaimer"] == DISCLAIMER
    assert server.get("/docs").status_code == 200
    spec = server.get("/openapi.json").json()
    for path in (
        "/api/v1/predict",
        "/api/v1/studies/{study_id}",
        "/api/v1/health",
        "/api/v1/model",
        "/api/v1/studies/{study_id}/report/sign-off",
    ):
        assert path in spec["paths"], path
    page = server.get("/")
    assert page.status_code == 200
    assert DISCLAIMER in page.text and "<svg" in page.text and 'capture="environment"' in page.text
    qr = server.get("/qr.svg")
    assert qr.status_code == 200 and qr.headers["content-type"].startswith("image/svg")


def test_predict_real_images_and_everything_after(server, example_paths, data_dir):
    classes = server.get("/api/v1/model").json()["classes"]
    correct = 0
    results = {}
    for p in example_paths:
        r = _post(server, p.name, p.read_bytes(), "image/jpeg")
        assert r.status_code == 200, r.text
        j = r.json()
        _check_study(j, classes)
        assert not j["duplicate"] and j["source_format"] == "jpeg"
        correct += _r0(j)["label"] == p.name.split("_")[0]
        results[p.name] = j
    assert correct >= 6, f"only {correct}/8 example images classified correctly"

    j = results[next(n for n in results if n.startswith("PNEUMONIA"))]
    sid = j["study_id"]
    # every URL in the answer works
    for url in (_r0(j)["annotated_image_url"], _r0(j)["heatmap_url"], j["image_url"]):
        r = server.get(url)
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG"), url
    assert Image.open(io.BytesIO(server.get(_r0(j)["heatmap_url"]).content)).mode == "RGB"
    got = server.get(f"/api/v1/studies/{sid}").json()
    assert _r0(got)["probabilities"] == _r0(j)["probabilities"] and got["study_id"] == sid
    pdf = server.get(j["report_urls"]["pdf"])
    assert (
        pdf.status_code == 200 and pdf.content.startswith(b"%PDF") and pdf.headers["content-type"] == "application/pdf"
    )
    html = server.get(j["report_urls"]["html"])
    assert html.status_code == 200 and DISCLAIMER in html.text and "data:image/png;base64" in html.text
    rj = server.get(j["report_urls"]["json"]).json()
    assert rj["status"] == "draft" and rj["study_id"] == sid
    page = server.get(j["page_url"])
    assert (
        page.status_code == 200 and DISCLAIMER in page.text and _r0(j)["label"] in page.text and "heatmap" in page.text
    )
    if j["triage"] == "finding":
        assert rj["abnormal"] and rj["flag"] and rj["sections"]["findings"] == "" and rj["heatmap_url"]
    normal = next(v for k, v in results.items() if v["triage"] == "no_finding")
    assert (
        "Both lungs clear" in normal["report"]["text"]
        and "to be confirmed by a radiologist" in normal["report"]["text"]
    )
    assert normal["report"]["flag"] is None

    # sign-off: a radiologist's login required, then signed once
    url = f"/api/v1/studies/{sid}/report/sign-off"
    base = str(server.base_url)
    assert httpx.post(base + url, json={"radiologist": "Dr Test"}).status_code == 401
    assert httpx.post(base + url, json={"radiologist": "Dr Test"}, auth=("rad", "wrong-password")).status_code == 401
    with _client(base, UPLOADER) as up:
        assert up.post(url, json={"radiologist": "Dr Test"}).status_code == 403  # uploaders do not sign
    assert server.post(url, json={"radiologist": ""}).status_code == 422
    r = server.post(url, json={"radiologist": "Dr Test", "findings": "Right lower lobe consolidation."})
    assert r.status_code == 200, r.text
    rep = r.json()["report"]
    assert rep["status"] == "signed" and rep["signed_by"] == "Dr Test (rad)" and rep["signed_at"]
    assert rep["sections"]["findings"] == "Right lower lobe consolidation."
    assert server.post(url, json={"radiologist": "Dr B"}).status_code == 409
    assert "SIGNED" in server.get(j["page_url"]).text

    # page sign-off form
    other = results[next(n for n in results if n != j and results[n]["study_id"] != sid)]
    form = {"radiologist": "Dr Form", "findings": "", "impression": "Confirmed.", "agrees": "yes"}
    with _client(base, UPLOADER) as up:
        assert up.post(f"/studies/{other['study_id']}/sign-off", data=form).status_code == 403
    r = server.post(f"/studies/{other['study_id']}/sign-off", data=form, follow_redirects=False)
    assert r.status_code == 303
    assert server.get(f"/api/v1/studies/{other['study_id']}").json()["report"]["signed_by"] == "Dr Form (rad)"

    # the same upload again: recognised by hash
    again = _post(server, "renamed.jpg", example_paths[0].read_bytes())
    assert again.status_code == 200 and again.json()["duplicate"]
    assert again.json()["study_id"] == results[example_paths[0].name]["study_id"]

    # list endpoint and the database
    lst = server.get("/api/v1/studies", params={"limit": 50}).json()
    assert lst["total"] >= 8
    con = sqlite3.connect(data_dir / "studies.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = con.execute(
        "SELECT s.sha256, r.label, s.report_status, s.signed_by FROM studies s JOIN model_results r ON r.study_id = s.id "
        "WHERE s.id = ?",
        (sid,),
    ).fetchone()
    con.close()
    assert row[1] == _r0(j)["label"] and row[2] == "signed" and row[3] == "Dr Test (rad)"
    from cxrtriage.serve.service import pixel_sha256

    # the study's identity is the hash of the decoded pixels, not of the file
    assert row[0] == pixel_sha256(read_image(next(p for p in example_paths if results[p.name]["study_id"] == sid)))
    assert server.get("/api/v1/studies/0123456789abcdef").status_code == 404
    assert server.get("/api/v1/studies/../../etc/passwd").status_code == 404


@pytest.mark.parametrize(
    "photometric,bits",
    [("MONOCHROME2", 8), ("MONOCHROME2", 16), ("MONOCHROME1", 8), ("MONOCHROME1", 16)],
)
def test_dicom_uploads(server, example_paths, data_dir, photometric, bits):
    p = next(x for x in example_paths if x.name.startswith("PNEUMONIA"))
    # invert a small corner patch (a different size per case): the same pixels would be the JPEG's study again
    cxr = read_image(p).copy()
    n = 2 + (bits == 16) + 2 * (photometric == "MONOCHROME1")
    cxr[:n, :n] = 255 - cxr[:n, :n]
    stored = cxr.astype(np.uint16) * (16 if bits == 16 else 1)
    if photometric == "MONOCHROME1":
        stored = stored.max() - stored
    data = _dicom(
        stored,
        bits=bits,
        photometric=photometric,
        rescale=(1.0, 0.0) if bits == 16 else None,
        patient_name="DOE^JANE",
        patient_id="ID-98765",
    )
    r = _post(server, "study.dcm", data, "application/dicom")
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["source_format"] == "dicom" and j["dicom"]["PhotometricInterpretation"] == photometric
    assert "PatientName" not in j["dicom"] and "DOE" not in r.text and "ID-98765" not in r.text
    # same picture as the JPEG original -> (almost) the same probabilities
    ref = _post(server, p.name, p.read_bytes()).json()
    pos = _r0(ref)["positive_class"] or _r0(ref)["label"]
    assert abs(_r0(j)["probabilities"][pos] - _r0(ref)["probabilities"][pos]) < 0.05
    # nothing identifying anywhere in the data folder
    for f in data_dir.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert b"DOE^JANE" not in blob and b"ID-98765" not in blob, f


def test_dicom_refusals(server, example_paths):
    cxr = read_image(example_paths[0])
    r = _post(server, "ct.dcm", _dicom(cxr, bits=8, modality="CT"))
    assert r.status_code == 422 and "Modality CT" in r.json()["reason"]
    r = _post(server, "empty.dcm", _dicom(cxr, bits=8, with_pixels=False))
    assert r.status_code == 422 and "pixel data" in r.json()["reason"]


def _bad_inputs(example_paths) -> dict[str, tuple[bytes, int]]:
    jpg = example_paths[1].read_bytes()
    cxr = read_image(example_paths[1])
    frames = [Image.fromarray(cxr), Image.fromarray(255 - cxr)]
    apng = io.BytesIO()
    frames[0].save(apng, format="PNG", save_all=True, append_images=frames[1:])
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    bomb = io.BytesIO()
    Image.new("L", (8000, 7000)).save(bomb, format="PNG")
    return {
        "zero.jpg": (b"", 422),
        "garbage.jpg": (b"this is not an image at all" * 20, 415),
        "truncated.jpg": (jpg[: len(jpg) // 2], 422),
        "header-only.png": (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, 422),
        "animated.png": (apng.getvalue(), 422),
        "animated.gif": (gif.getvalue(), 415),
        "bomb.png": (bomb.getvalue(), 422),
        "huge.jpg": (jpg + b"\0" * 3_100_000, 413),
        "tiny.png": (_png(np.zeros((4, 4), np.uint8)), 422),
    }


def test_bad_inputs_get_4xx_json(server, example_paths):
    for name, (data, status) in _bad_inputs(example_paths).items():
        r = _post(server, name, data, "image/png")
        assert r.status_code == status, (name, r.status_code, r.text)
        j = r.json()
        assert j["status"] == status and j["reason"] and j["error"], name
    assert server.post("/api/v1/predict").status_code == 422  # no file field
    assert server.post(
        "/api/v1/predict", content=b"xx", headers={"content-type": "multipart/form-data; boundary=zz"}
    ).status_code in (400, 422)
    assert server.get("/api/v1/health").json()["status"] == "ok"


def test_odd_but_valid_images_are_handled(server, example_paths, tmp_path):
    p = example_paths[2]
    cxr = read_image(p)
    ref = _post(server, p.name, p.read_bytes()).json()
    pos = _r0(ref)["positive_class"]
    rgba = np.dstack([cxr, cxr, cxr, np.full_like(cxr, 255)])
    cmyk = io.BytesIO()
    Image.fromarray(np.dstack([cxr] * 3)).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    variants = {
        "16bit.png": _png(cxr.astype(np.uint16) * 257),
        "rgba.png": _png(rgba),
        "cmyk.jpg": cmyk.getvalue(),
        "../../../etc/evil name.png": _png(cxr),
        "C:\\Users\\x\\photo.png": _png(cxr) + b"",
    }
    for name, data in variants.items():
        r = _post(server, name, data, "text/plain")  # Content-Type is ignored
        assert r.status_code == 200, (name, r.text)
        j = r.json()
        assert abs(_r0(j)["probabilities"][pos] - _r0(ref)["probabilities"][pos]) < 0.1, name
        assert "evil" not in r.text and "etc" not in j["image_url"]
    assert not Path("/etc/evil name.png").exists()


def test_non_radiographs_refused(server, model_dir):
    skimage_data = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skimage_data.astronaut()).save(buf, format="JPEG")
    r = _post(server, "astronaut.jpg", buf.getvalue())
    assert r.status_code == 422 and r.json()["error"] == "not_a_chest_radiograph"
    refused = 0
    for name in ("page", "text", "camera", "coins", "moon", "horse"):
        img = getattr(skimage_data, name)()
        img = (img * 255).astype(np.uint8) if img.dtype == bool else img
        r = _post(server, f"{name}.png", _png(np.asarray(img, dtype=np.uint8)))
        assert r.status_code in (200, 422), r.text
        refused += r.status_code == 422
        if r.status_code == 422:
            assert r.json()["error"] == "not_a_chest_radiograph", r.text
    assert refused >= 5, f"only {refused}/6 grayscale non-radiographs refused"


def test_concurrent_requests(server, example_paths):
    rng = np.random.default_rng(1)
    base = read_image(example_paths[3])
    payloads = []
    for _k in range(12):  # distinct bytes -> 12 new studies
        noisy = np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
        payloads.append(_png(noisy))
    with ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda d: _post(server, "c.png", d), payloads + payloads[:4]))
    assert all(r.status_code == 200 for r in rs), [r.text for r in rs if r.status_code != 200]
    ids = {r.json()["study_id"] for r in rs}
    assert len(ids) == 12


def test_restart_keeps_studies(model_dir, tmp_path, example_paths):
    d = tmp_path / "data"
    with running_server(_settings(model_dir, d)) as url:
        with _client(url) as c:
            j = _post(c, "a.jpg", example_paths[4].read_bytes()).json()
            n = c.get("/api/v1/health").json()["studies"]
    with running_server(_settings(model_dir, d)) as url:
        with _client(url) as c:
            assert c.get("/api/v1/health").json()["studies"] == n == 1
            got = c.get(f"/api/v1/studies/{j['study_id']}").json()
            assert _r0(got)["probabilities"] == _r0(j)["probabilities"]
            assert c.get(_r0(j)["heatmap_url"]).status_code == 200
            again = _post(c, "b.jpg", example_paths[4].read_bytes()).json()
            assert again["duplicate"] and again["study_id"] == j["study_id"]


def test_model_without_onnx_is_a_startup_error(model_dir, tmp_path):
    """The server runs model.onnx only: a folder without it stops the start with the command that exports it."""
    from cxrtriage.models.bundle import ModelLoadError
    from cxrtriage.serve.service import StudyService

    bare = copy_model_dir(model_dir, tmp_path / "no-onnx" / model_dir.name, export=False)
    (bare / "model.onnx").unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match=r"no model\.onnx.*`cxr export --model "):
        StudyService(_settings(bare, tmp_path / "d", cxr_gate=False, population_gate=False, lung_segmenter=False))
    assert not (bare / "model.onnx").exists()  # nothing exported behind the user's back


#: Modules a serving process must never import (the training stack, plotting, scikit-learn).
HEAVY_MODULES = (
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "lightning_fabric",
    "pytorch_grad_cam",
    "matplotlib",
    "sklearn",
    "monai",
    "segmentation_models_pytorch",
)

#: A whole serving process in a fresh interpreter: import the app, serve every shipped model with both gates and
#: the segmenter, send the uploads in argv[1], fetch every picture and report; print what it imported and mapped.
_TORCH_FREE_SERVER = """
import json, sys
from pathlib import Path

import httpx

import cxrtriage.serve.app  # noqa: F401
after_import = sorted(m for m in sys.modules if m.split(".")[0] in (*HEAVY, "scipy"))

from cxrtriage.serve.settings import ServeSettings
from cxrtriage.serve.testing import add_user, running_server

data = Path(sys.argv[2])
add_user(data, "rad", "rad-password-1")
settings = ServeSettings(model_dir=None, data_dir=data, host="127.0.0.1", port=0)
codes = []
with running_server(settings) as url, httpx.Client(base_url=url, timeout=60, auth=("rad", "rad-password-1")) as c:
    served = c.get("/api/v1/models").json()
    models, backends = [m["name"] for m in served], {m["backend"] for m in served}
    for f in sorted(Path(sys.argv[1]).iterdir()):
        r = c.post("/api/v1/predict", files={"file": (f.name, f.read_bytes(), "application/octet-stream")})
        codes.append((f.name, r.status_code, r.json().get("error")))
        if r.status_code != 200:
            continue
        j = r.json()
        urls = [j["image_url"], j["lungs_url"], j["page_url"], *j["report_urls"].values()]
        urls += [u for res in j["results"] for u in (res["heatmap_url"], res["annotated_image_url"]) if u]
        codes += [(u, c.get(u).status_code, None) for u in urls]
maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
print(json.dumps({
    "after_import": after_import,
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY),
    "codes": codes,
    "models": models,
    "backends": sorted(backends),
    "torch_libraries": sorted({line.split()[-1] for line in maps.splitlines() if "libtorch" in line or "libc10" in line}),
}))
"""


def test_serving_process_imports_no_training_stack(tmp_path, example_paths, shared_data_dir):
    """A fresh process that imports the app, serves every shipped model, both gates and the segmenter, and handles
    real uploads (PNG, JPEG, DICOM, a refused photo) with every picture and report: no torch, timm, lightning,
    pytorch-grad-cam, matplotlib, scikit-learn, MONAI or segmentation-models-pytorch in ``sys.modules``, no libtorch
    mapped; SciPy only once a mask was post-processed."""
    import json
    import subprocess
    import sys

    from cxrtriage.serve.settings import all_shipped_model_dirs

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for p in example_paths[:3]:
        (uploads / p.name).write_bytes(p.read_bytes())
    (uploads / "b-normal.png").write_bytes(_png(read_image(example_paths[4])))
    (uploads / "c-pneumonia.dcm").write_bytes(_dicom(read_image(example_paths[6]), bits=8))
    adult = sorted((shared_data_dir / "covid19-radiography").rglob("*.png"))[:1]
    for i, a in enumerate(adult):
        (uploads / f"d-adult-{i}.png").write_bytes(a.read_bytes())
    skimage_data = pytest.importorskip("skimage.data")
    buf = io.BytesIO()
    Image.fromarray(skimage_data.camera()).save(buf, format="PNG")
    (uploads / "e-camera.png").write_bytes(buf.getvalue())

    script = f"HEAVY = {HEAVY_MODULES!r}\n" + _TORCH_FREE_SERVER
    out = subprocess.run(
        [sys.executable, "-c", script, str(uploads), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["after_import"] == [], got["after_import"]  # not even SciPy at import
    assert got["heavy"] == [] and got["torch_libraries"] == [], got
    assert got["models"] == [d.name for d in all_shipped_model_dirs()] and got["backends"] == ["onnxruntime"]
    codes = {name: (code, err) for name, code, err in got["codes"]}
    assert codes["e-camera.png"] == (422, "not_a_chest_radiograph"), codes
    assert all(code == 200 for name, (code, _) in codes.items() if name != "e-camera.png"), codes
    assert sum(name.startswith("/") and "heatmap" in name for name in codes) >= 3 * 3  # every model's heatmap


def test_cli_serve_subprocess_prints_qr(model_dir, tmp_path):
    """``cxr serve`` as users start it: QR code and URL on stdout, health answers, clean stop."""
    import subprocess
    import time

    from cxrtriage.serve.testing import free_port, serve_command

    port = free_port()
    cmd = serve_command(model_dir, tmp_path / "d", port)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**__import__("os").environ, "CXRTRIAGE_INITIAL_USER": "", "CXRTRIAGE_SECRET_KEY": ""},
    )
    try:
        deadline = time.monotonic() + 90
        ok = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ok = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                break
            time.sleep(0.3)
        assert ok, "server did not answer"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/" in out
    assert "No users yet" in out and "cxr users add NAME --role radiologist" in out  # how to create the first user
    assert DISCLAIMER in out
    assert sum(1 for line in out.splitlines() if "█" in line or "▀" in line or "▄" in line) >= 10  # the QR code


def test_server_on_postgresql(model_dir, tmp_path, example_paths, pg_server):
    """The same server with ``database_url`` on a real PostgreSQL: predict, read back, sign off, restart."""
    url = pg_server.create_database()
    d = tmp_path / "pg-data"
    with running_server(_settings(model_dir, d, database_url=url)) as base:
        with _client(base) as c:
            h = c.get("/api/v1/health").json()
            assert h["status"] == "ok" and h["database"] and h["studies"] == 0
            j = _post(c, "a.jpg", example_paths[6].read_bytes()).json()
            assert not j["duplicate"]
            assert (
                c.get(f"/api/v1/studies/{j['study_id']}").json()["results"][0]["probabilities"]
                == _r0(j)["probabilities"]
            )
            r = c.post(f"/api/v1/studies/{j['study_id']}/report/sign-off", json={"radiologist": "Dr PG"})
            assert r.status_code == 200 and r.json()["report"]["signed_by"] == "Dr PG (rad)"
    assert not (d / "studies.sqlite3").exists()  # images on disk, rows in PostgreSQL
    assert list((d / "images").rglob("*.png"))
    with running_server(_settings(model_dir, d, database_url=url)) as base:
        with _client(base) as c:
            assert c.get("/api/v1/health").json()["studies"] == 1
            again = _post(c, "b.jpg", example_paths[6].read_bytes()).json()
            assert again["duplicate"] and again["study_id"] == j["study_id"] and again["report"]["status"] == "signed"
            assert c.get("/api/v1/studies").json()["studies"][0]["study_id"] == j["study_id"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkilled_server_loses_no_accepted_study(model_dir, tmp_path, example_paths, backend, request):
    """``cxr serve`` killed (SIGKILL) while two clients upload: every study answered 200 is stored."""
    import signal
    import subprocess
    import threading
    import time

    from cxrtriage.serve.testing import free_port, serve_command
    from cxrtriage.store import StudyStore

    db_url = request.getfixturevalue("pg_server").create_database() if backend == "postgresql" else None
    data = tmp_path / "d"
    port = free_port()
    cmd = serve_command(model_dir, data, port, *(["--database-url", db_url] if db_url else []))
    _with_users(data, db_url)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    base = read_image(example_paths[7])

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, auth=RAD[:2]) as c:
            while not stop.is_set():
                noisy = np.clip(base.astype(int) + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
                try:
                    r = _post(c, "k.png", _png(noisy))
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        accepted.append(r.json()["study_id"])

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        threads = [threading.Thread(target=client, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        while len(accepted) < 15 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        maps = Path(f"/proc/{proc.pid}/maps")
        mapped = maps.read_text() if maps.exists() else ""
        proc.send_signal(signal.SIGKILL)  # requests in flight
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(accepted) >= 15, proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    # the serving process (gates, segmenter, model, CAM: ONNX Runtime and NumPy) never mapped PyTorch's libraries
    assert "onnxruntime" in mapped and "libtorch" not in mapped and "libc10" not in mapped
    store = StudyStore(data, db_url)
    try:
        assert [sid for sid in accepted if store.get(sid) is None] == []
        assert store.count() >= len(accepted)
    finally:
        store.close()


def test_malloc_settings_of_the_server():
    """``cxr serve`` caps glibc's arenas, fixes the mmap threshold and trims the heap (no-ops elsewhere)."""
    import ctypes.util

    from cxrtriage.serve.memory import configure_malloc, release_free_memory

    glibc = ctypes.util.find_library("c") is not None and Path("/proc/self/maps").exists()
    assert configure_malloc(arenas=8, mmap_threshold=128 * 1024) is glibc  # glibc's own defaults
    assert isinstance(release_free_memory(), bool)
    with pytest.raises(ValueError, match="arena"):
        configure_malloc(arenas=0)
    with pytest.raises(ValueError, match="mmap_threshold"):
        configure_malloc(mmap_threshold=10)
