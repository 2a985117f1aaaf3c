"""Hospital integration against a real PACS: Orthanc on loopback, the DICOM listener, SR and heatmap back.

Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``; ``scripts/test.sh`` installs them) runs as a
subprocess with a generated configuration; the listener runs in-process with the real model.
The images are real chest radiographs (``../shared/data`` when present, else the shipped examples)
written as DX DICOM files with patient identifiers.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cxrtriage.data.io import read_image
from cxrtriage.serve.testing import copy_model_dir, find_model_dir, free_port

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("pynetdicom", reason="pynetdicom not installed (pip install -e '.[serve]')")
pytest.importorskip("highdicom", reason="highdicom not installed (pip install -e '.[serve]')")

from cxrtriage.pacs.testing import OrthancServer, dx_bytes, find_orthanc  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "kermany-pneumonia"
EXAMPLES = REPO / "src" / "cxrtriage" / "examples"

LISTENER_AE = "CXRTRIAGE"
ORTHANC_AE = "ORTHANC"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"


def real_cxr_paths(n: int) -> list[Path]:
    """``n`` real chest radiographs: Kermany train images from ../shared/data, else the shipped examples."""
    if (SHARED / "manifest.csv").is_file():
        with open(SHARED / "manifest.csv") as fh:
            rows = list(csv.DictReader(fh))
        return [SHARED / r["path"] for r in rows[:: max(1, len(rows) // n)][:n]]
    return sorted(EXAMPLES.glob("*.jpg"))[:n]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    return copy_model_dir(src, tmp_path_factory.mktemp("pacs-model") / src.name)


@pytest.fixture(scope="module")
def engine(model_dir):
    from cxrtriage.serve.service import Engine
    from cxrtriage.serve.settings import ServeSettings

    return Engine(ServeSettings(model_dir=model_dir, data_dir=model_dir.parent / "unused", threads=1))


@pytest.fixture(scope="module")
def orthanc_binary() -> str:
    found = find_orthanc()
    if found is None:
        pytest.skip(
            "Orthanc is not installed and could not be (scripts/test.sh: apt-get install orthanc orthanc-dicomweb)"
        )
    return found


def _listener(engine, data_dir: Path, port: int, return_to: str | None, **kw):
    from cxrtriage.pacs.listener import Listener
    from cxrtriage.pacs.settings import ListenSettings
    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import ServeSettings

    serve = ServeSettings(model_dir=engine.settings.model_dir, data_dir=data_dir, threads=1)
    settings = ListenSettings(
        service=serve,
        ae_title=LISTENER_AE,
        port=port,
        return_to=return_to,
        retry_base_s=0.2,
        retry_max_s=1.0,
        poll_s=0.5,
        **kw,
    )
    return Listener(settings, StudyService(serve, engine))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, engine, orthanc_binary) -> Iterator[tuple[OrthancServer, object]]:
    """Orthanc and the listener, each knowing the other: Orthanc forwards to ``cxr``, results go to ORTHANC."""
    root = tmp_path_factory.mktemp("orthanc")
    listen_port, dicom_port = free_port(), free_port()
    orthanc = OrthancServer(
        root, free_port(), dicom_port, ORTHANC_AE, {"cxr": (LISTENER_AE, "127.0.0.1", listen_port)}, orthanc_binary
    )
    orthanc.start()
    listener = _listener(
        engine, tmp_path_factory.mktemp("pacs-data"), listen_port, f"{ORTHANC_AE}@127.0.0.1:{dicom_port}"
    )
    listener.start()
    try:
        yield orthanc, listener
    finally:
        listener.stop()
        orthanc.stop()


def _wait_for_results(orthanc: OrthancServer, study: str, timeout: float = 60.0) -> dict[str, list[str]]:
    """Instance ids of the SR and Secondary Capture series in an Orthanc study, once both are there."""
    deadline = time.monotonic() + timeout
    found: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        found = {}
        for series in orthanc.series_of_study(study):
            for inst in series["Instances"]:
                tags = orthanc.get(f"/instances/{inst}/simplified-tags")
                found.setdefault(tags.get("SOPClassUID", ""), []).append(inst)
        if SR_CLASS in found and SC_CLASS in found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"no SR and heatmap in Orthanc study {study} after {timeout:.0f} s: {found}")


def test_orthanc_round_trip_sr_and_heatmap(pacs, model_dir):
    """Orthanc -> C-STORE -> cxr listen -> SR + heatmap C-STORE -> the same Orthanc study; SR probabilities == API."""
    from cxrtriage import load_model
    from cxrtriage.report.dicom_out import read_sr_probabilities

    orthanc, listener = pacs
    path = real_cxr_paths(1)[0]
    dicom = dx_bytes(read_image(path))
    src = pydicom.dcmread(io.BytesIO(dicom))
    stored = orthanc.upload(dicom)
    orthanc.send_to("cxr", [stored["ID"]])
    found = _wait_for_results(orthanc, stored["ParentStudy"])
    assert len(found[SR_CLASS]) == 1 and len(found[SC_CLASS]) == 1

    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SR_CLASS][0])))
    # filed into the same patient and study, referencing the analysed image
    assert (sr.PatientName, sr.PatientID, sr.StudyInstanceUID) == (src.PatientName, src.PatientID, src.StudyInstanceUID)
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    results = read_sr_probabilities(sr)
    assert len(results) >= 1

    # the same image through the Python API (ONNX Runtime, like the listener)
    api_model = load_model(model_dir, backend="onnx", threads=1)
    tmp = model_dir.parent / "roundtrip.dcm"
    tmp.write_bytes(dicom)
    api_probs = api_model.probabilities(str(tmp))[0]
    got = results[0]
    assert got["model_version"] == api_model.config.version
    assert list(got["probabilities"]) == api_model.classes
    np.testing.assert_allclose(list(got["probabilities"].values()), api_probs, atol=1e-6)
    assert got["label"] in api_model.classes
    text = sr.ContentSequence[1].TextValue
    assert "Not a diagnosis" in text

    sc = pydicom.dcmread(io.BytesIO(orthanc.instance_file(found[SC_CLASS][0])))
    assert sc.StudyInstanceUID == src.StudyInstanceUID and sc.PatientID == src.PatientID
    assert "AI" in sc.SeriesDescription and "not a diagnosis" in sc.SeriesDescription
    assert sc.PhotometricInterpretation == "RGB" and sc.pixel_array.shape[2] == 3

    # the store holds the de-identified study only; the outbox row's identifiers are erased once sent
    rec = listener.service.store.recent(1)[0]
    assert rec.source == "pacs"
    assert "PatientName" not in (rec.dicom_meta or {}) and "Doe" not in str(rec.to_dict())
    rows = listener.outbox.items(rec.id)
    assert {r.kind for r in rows} == {"sr", "sc"} and all(r.status == "sent" and r.dataset is None for r in rows)

    # sending the same instance again files no duplicate (derived UIDs)
    orthanc.send_to("cxr", [stored["ID"]])
    time.sleep(1.0)
    again = _wait_for_results(orthanc, stored["ParentStudy"])
    assert len(again[SR_CLASS]) == 1 and len(again[SC_CLASS]) == 1


def test_results_survive_a_pacs_outage(pacs):
    """Orthanc down when the result is ready: it stays in the outbox and arrives after Orthanc restarts."""
    from pynetdicom import AE
    from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation

    orthanc, listener = pacs
    img = read_image(real_cxr_paths(2)[1])
    dicom = dx_bytes(img, patient_name="Roe^Richard", patient_id="PAT-002")
    src = pydicom.dcmread(io.BytesIO(dicom))
    orthanc.stop()
    try:
        ae = AE("MODALITY1")
        ae.add_requested_context(DigitalXRayImageStorageForPresentation)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title=LISTENER_AE)
        assert assoc.is_established
        status = assoc.send_c_store(src)
        assoc.release()
        assert status.Status == 0x0000
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = [r for r in listener.outbox.items() if r.status == "pending"]
            if pending and all(r.attempts >= 2 for r in pending):
                break
            time.sleep(0.2)
        assert pending and all(r.attempts >= 2 and r.last_error for r in pending), pending
    finally:
        orthanc.start()
    # the image came from the modality straight to us, so the PACS learns of the study from the results
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and listener.outbox.counts().get("pending"):
        time.sleep(0.25)
    assert not listener.outbox.counts().get("pending"), listener.outbox.items()
    found = orthanc.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": src.StudyInstanceUID}})
    assert len(found) == 1
    got = _wait_for_results(orthanc, found[0], timeout=10)
    assert len(got[SR_CLASS]) == 1 and len(got[SC_CLASS]) == 1


def test_non_cxr_and_malformed_dicom_get_failure_statuses(pacs):
    """CT, a DX whose Modality is CT, truncated or no pixels, a photograph: failure statuses; the listener goes on."""
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage, DigitalXRayImageStorageForPresentation, Verification

    _, listener = pacs
    img = read_image(real_cxr_paths(3)[2])
    good = pydicom.dcmread(io.BytesIO(dx_bytes(img, patient_id="PAT-003")))
    ct = pydicom.dcmread(io.BytesIO(dx_bytes(img)))
    ct.SOPClassUID, ct.Modality = CTImageStorage, "CT"
    dx_ct = pydicom.dcmread(io.BytesIO(dx_bytes(img)))
    dx_ct.Modality = "CT"
    truncated = pydicom.dcmread(io.BytesIO(dx_bytes(img)))
    truncated.PixelData = truncated.PixelData[:1000]
    no_pixels = pydicom.dcmread(io.BytesIO(dx_bytes(img)))
    del no_pixels.PixelData
    skimage_data = pytest.importorskip("skimage.data")
    photo = pydicom.dcmread(io.BytesIO(dx_bytes(skimage_data.camera())))  # a photograph sent as DX: gate 1
    rle = pydicom.dcmread(io.BytesIO(dx_bytes(img, patient_id="PAT-005")))
    rle.compress(RLELossless)  # a compressed transfer syntax, accepted for CR/DX
    refused_before = listener.refused

    ae = AE("MODALITY1")
    for syntax in (ExplicitVRLittleEndian, RLELossless):  # one context per syntax, as modalities propose them
        ae.add_requested_context(DigitalXRayImageStorageForPresentation, syntax)
    for ctx in (CTImageStorage, Verification):
        ae.add_requested_context(ctx)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=LISTENER_AE)
    assert assoc.is_established
    try:
        answers = {}
        cases = (("ct", ct), ("dx_ct", dx_ct), ("truncated", truncated), ("no_pixels", no_pixels), ("photo", photo))
        for name, ds in cases:
            st = assoc.send_c_store(ds)
            answers[name] = (int(st.Status), str(st.get("ErrorComment", "")))
        assert answers["ct"][0] == 0x0122 and "not CR/DX" in answers["ct"][1]
        assert answers["dx_ct"][0] == 0xC000 and "Modality CT" in answers["dx_ct"][1]
        assert answers["truncated"][0] == 0xC000
        assert answers["no_pixels"][0] == 0xC000 and "pixel data" in answers["no_pixels"][1]
        assert answers["photo"][0] == 0xC000 and "not a chest radiograph" in answers["photo"][1]
        # still alive on the same association, and for good images (also RLE Lossless compressed)
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(good).Status == 0x0000
        assert assoc.send_c_store(rle).Status == 0x0000
    finally:
        assoc.release()
    assert listener.refused - refused_before == 5


def test_calling_ae_allow_list(engine, tmp_path):
    """Only allow-listed calling AE titles may associate; others get A-ASSOCIATE-RJ."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    with _listener(engine, tmp_path, 0, None, allowed_calling=("GOODMOD",)) as listener:
        for aet, ok in (("GOODMOD", True), ("INTRUDER", False)):
            ae = AE(aet)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", listener.port, ae_title=LISTENER_AE)
            assert assoc.is_established is ok and assoc.is_rejected is (not ok)
            if ok:
                assert assoc.send_c_echo().Status == 0
                assoc.release()


def _multipart_related(parts: list[tuple[str, bytes]], boundary: str = "cxr-boundary-7d1a") -> tuple[bytes, str]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n" for ctype, data in parts)
    return body + f"--{boundary}--\r\n".encode(), f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_stow_rs_and_fhir(engine, tmp_path):
    """STOW-RS stores the DX instances and answers a DICOM JSON response; the FHIR report validates."""
    httpx = pytest.importorskip("httpx")
    from fhir.resources.R4B.diagnosticreport import DiagnosticReport

    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import add_user, running_server

    add_user(tmp_path, "rad", "rad-password-1")
    settings = ServeSettings(model_dir=engine.settings.model_dir, data_dir=tmp_path, port=0, threads=1)
    img = read_image(real_cxr_paths(4)[3])
    good = dx_bytes(img, patient_name="Stow^Sam", patient_id="PAT-004")
    ct = pydicom.dcmread(io.BytesIO(dx_bytes(img)))
    ct.SOPClassUID, ct.Modality = "1.2.840.10008.5.1.4.1.1.2", "CT"
    buf = io.BytesIO()
    ct.save_as(buf, enforce_file_format=True)
    body, ctype = _multipart_related(
        [("application/dicom", good), ("application/dicom", buf.getvalue()), ("application/dicom", b"not dicom")]
    )
    with running_server(settings, StudyService(settings, engine)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype}).status_code == 401
        c.auth = ("rad", "rad-password-1")
        r = c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 202 and r.headers["content-type"].startswith("application/dicom+json"), r.text
        j = r.json()
        stored, failed = j["00081199"]["Value"], j["00081198"]["Value"]
        src = pydicom.dcmread(io.BytesIO(good))
        assert [s["00081155"]["Value"][0] for s in stored] == [src.SOPInstanceUID]
        assert [f["00081197"]["Value"][0] for f in failed] == [0x0122, 0xC000]
        assert failed[0]["00081155"]["Value"][0] == ct.SOPInstanceUID
        study = c.get(stored[0]["00081190"]["Value"][0]).json()
        assert "Stow" not in str(study)

        only_bad, ctype2 = _multipart_related([("application/dicom", b"not dicom")])
        assert c.post("/dicomweb/studies", content=only_bad, headers={"Content-Type": ctype2}).status_code == 409
        assert (
            c.post("/dicomweb/studies", content=good, headers={"Content-Type": "application/dicom"}).status_code == 415
        )

        f = c.get(f"/api/v1/studies/{study['study_id']}/fhir")
        assert f.status_code == 200 and f.headers["content-type"].startswith("application/fhir+json")
        report = DiagnosticReport.model_validate(f.json())
        assert report.status == "preliminary" and len(report.contained) == len(report.result) >= 1
        obs = report.contained[0]
        probs = {
            comp.code.text.removeprefix("Probability of "): float(comp.valueQuantity.value)
            for comp in obs.component
            if comp.code.text.startswith("Probability")
        }
        assert probs == pytest.approx(study["results"][0]["probabilities"], abs=1e-12)
        assert study["source"] == "stow"
        assert "Not a diagnosis" in report.conclusion
        assert c.get("/api/v1/studies/0123456789abcdef/fhir").status_code == 404


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_outbox_claims_once_backs_off_and_erases_sent_bytes(tmp_path, backend, request):
    """Two senders never claim the same row; a failure is retried later; a sent row keeps no identifiers."""
    from cxrtriage.store import Outbox, OutgoingObject, StudyStore

    url = request.getfixturevalue("pg_server").create_database() if backend == "postgresql" else None
    store = StudyStore(tmp_path, url)
    try:
        box = Outbox(store)
        objs = [OutgoingObject("sr", SR_CLASS, f"2.25.{i}", b"DICM-bytes-with-Doe^Jane", "s1") for i in range(3)]
        assert box.enqueue(objs, "A@h:1") == 3
        assert box.enqueue(objs[:1], "A@h:1") == 0  # the same object for the same destination: not queued twice
        assert box.enqueue(objs[:1], "B@h:2") == 1
        first, second = box.claim("A@h:1", limit=2), box.claim("A@h:1", limit=10)
        assert len(first) == 2 and len(second) == 1 and not {r.id for r in first} & {r.id for r in second}
        assert box.claim("A@h:1") == []  # all leased
        box.mark_failed(first[0].id, "association rejected", retry_in_s=60)
        box.mark_sent(first[1].id)
        rows = {r.id: r for r in box.items()}
        assert rows[first[0].id].attempts == 1 and rows[first[0].id].status == "pending"
        assert rows[first[1].id].status == "sent" and rows[first[1].id].dataset is None
        assert box.claim("A@h:1") == []  # the failed one waits for its back-off
        assert box.counts("A@h:1") == {"pending": 2, "sent": 1}
    finally:
        store.close()


def test_cli_listen_subprocess(model_dir, tmp_path, capsys):
    """``cxr listen`` (the real CLI) answers C-ECHO, refuses a bad --return-to, and stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    from cxrtriage.cli.main import main

    base = [sys.executable, "-m", "cxrtriage.cli", "listen", "--model", str(model_dir), "--data-dir", str(tmp_path)]
    assert main(base[3:] + ["--return-to", "nowhere"]) == 2  # refused before the model loads
    assert "AE@host:port" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path), "--return-to", "ORTHANC@pacs"]) == 2
    assert "AE@host:port" in capsys.readouterr().err
    port = free_port()
    proc = subprocess.Popen([*base, "--port", str(port), "--threads", "1"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"DICOM Storage SCP CXRTRIAGE on 127.0.0.1:{port}" in line, line
        ae = AE("ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title="CXRTRIAGE")
        assert assoc.is_established and assoc.send_c_echo().Status == 0
        assoc.release()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sr_and_fhir_builders_with_several_models():
    """One model container / Observation per applicable model; a non-applicable model is left out."""
    from types import SimpleNamespace

    from cxrtriage.report.dicom_out import build_sr, read_sr_probabilities, source_header
    from cxrtriage.report.fhir import diagnostic_report

    img = read_image(sorted(EXAMPLES.glob("*.jpg"))[0])
    src = source_header(pydicom.dcmread(io.BytesIO(dx_bytes(img))))
    common = dict(threshold=None, positive_class=None, flag=None, population_warning=None)
    results = [
        SimpleNamespace(
            model_name="pneumonia",
            model_version="1",
            task="pneumonia",
            label="PNEUMONIA",
            applicable=True,
            probabilities={"NORMAL": 0.25, "PNEUMONIA": 0.75},
            **{**common, "threshold": 0.4, "positive_class": "PNEUMONIA"},
        ),
        SimpleNamespace(
            model_name="type",
            model_version="2",
            task="pneumonia_type",
            label="viral",
            applicable=False,
            probabilities={"bacterial": 0.3, "viral": 0.7},
            **common,
        ),
        SimpleNamespace(
            model_name="finding",
            model_version="3",
            task="finding",
            label="normal",
            applicable=True,
            probabilities={"abnormal": 0.1, "normal": 0.9},
            **{**common, "population_warning": "adult model, child image"},
        ),
    ]
    sr = build_sr(src, results, "0123456789abcdef")
    back = read_sr_probabilities(sr)
    assert [r["model_name"] for r in back] == ["pneumonia", "finding"]
    assert sr.ContentSequence[-1].TextValue.startswith("type 2: ")  # the left-out model is named, with why
    assert back[0]["probabilities"] == {"NORMAL": 0.25, "PNEUMONIA": 0.75} and back[0]["threshold"] == 0.4
    assert build_sr(src, results, "0123456789abcdef").SOPInstanceUID == sr.SOPInstanceUID  # derived, stable
    assert build_sr(src, results, "fedcba9876543210").SOPInstanceUID != sr.SOPInstanceUID
    with pytest.raises(ValueError, match="no applicable"):
        build_sr(src, results[1:2], "0123456789abcdef")
    fhir = diagnostic_report(
        "0123456789abcdef",
        "2026-11-28T12:00:00.000+00:00",
        results,
        report={"status": "signed", "signed_by": "Dr A", "impression": "Consolidation."},
    )
    assert fhir["status"] == "final" and len(fhir["contained"]) == 2
    assert fhir["resultsInterpreter"] == [{"display": "Dr A"}] and fhir["conclusion"].startswith("Consolidation.")


def test_orthanc_lua_auto_routing(engine, orthanc_binary, tmp_path):
    """An Orthanc whose Lua script forwards each stored CR/DX to the listener: results come back, nothing loops."""
    listen_port, dicom_port = free_port(), free_port()
    orthanc = OrthancServer(
        tmp_path / "orthanc",
        free_port(),
        dicom_port,
        ORTHANC_AE,
        {"cxr": (LISTENER_AE, "127.0.0.1", listen_port)},
        orthanc_binary,
        auto_route=True,
    )
    orthanc.start()
    try:
        with _listener(engine, tmp_path / "data", listen_port, f"{ORTHANC_AE}@127.0.0.1:{dicom_port}") as listener:
            stored = orthanc.upload(dx_bytes(read_image(real_cxr_paths(5)[4]), patient_id="PAT-006"))
            found = _wait_for_results(orthanc, stored["ParentStudy"])
            assert len(found[SR_CLASS]) == 1 and len(found[SC_CLASS]) == 1
            time.sleep(1.0)  # a forwarded SR or SC would have reached the listener by now
            assert listener.received == 1 and listener.refused == 0  # the results were not routed back to it
    finally:
        orthanc.stop()


def test_stow_rs_results_go_to_the_pacs(pacs, engine, tmp_path):
    """With dicom_return_to (cxr serve --return-to), a STOW-RS instance's SR and heatmap reach the PACS."""
    httpx = pytest.importorskip("httpx")
    from cxrtriage.pacs.sender import Sender
    from cxrtriage.pacs.settings import Destination
    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.serve.testing import add_user, running_server
    from cxrtriage.store import Outbox

    orthanc, _ = pacs
    add_user(tmp_path, "rad", "rad-password-1")
    to = f"{ORTHANC_AE}@127.0.0.1:{orthanc.dicom_port}"
    settings = ServeSettings(
        model_dir=engine.settings.model_dir, data_dir=tmp_path, port=0, threads=1, dicom_return_to=to
    )
    service = StudyService(settings, engine)
    sender = Sender(Outbox(service.store), Destination.parse(to), "CXRTRIAGE", poll_s=0.2)
    dicom = dx_bytes(read_image(real_cxr_paths(6)[5]), patient_name="Stow^Sue", patient_id="PAT-007")
    src = pydicom.dcmread(io.BytesIO(dicom))
    body, ctype = _multipart_related([("application/dicom", dicom)])
    sender.start()
    try:
        with (
            running_server(settings, service) as url,
            httpx.Client(base_url=url, timeout=60, auth=("rad", "rad-password-1")) as c,
        ):
            r = c.post("/dicomweb/studies", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            found: list[str] = []
            while not found and time.monotonic() < deadline:
                found = orthanc.post(
                    "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": src.StudyInstanceUID}}
                )
                time.sleep(0.2)
            got = _wait_for_results(orthanc, found[0], timeout=20)
            assert len(got[SR_CLASS]) == 1 and len(got[SC_CLASS]) == 1
            sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(got[SR_CLASS][0])))
            assert str(sr.PatientName) == "Stow^Sue"
    finally:
        sender.stop()
