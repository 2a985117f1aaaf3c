"""Issue 10's probes against a real server (uvicorn on a loopback port): access control, hostile inputs, PHI.

Memory growth under the bombs is measured by ``benchmarks/bench_security.py``
(not here: RSS figures are not stable enough for a unit test); here each bomb
must get a 4xx with a reason, and the server must still answer afterwards.
"""

from __future__ import annotations

import io
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.data.io import read_image
from cxrtriage.serve import hostile
from cxrtriage.serve.testing import add_user, copy_model_dir, find_model_dir, running_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("argon2")

RAD = ("rad", "rad-password-1")
UPLOADER = ("up", "up-password-1")
PHI = ("DOE^JANE", "ID-98765", "JANE DOE", "Jane Doe")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    return copy_model_dir(src, tmp_path_factory.mktemp("sec-model") / src.name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sec-data")
    add_user(d, *RAD, "radiologist")
    add_user(d, *UPLOADER, "uploader")
    return d


@pytest.fixture(scope="module")
def settings(model_dir, data_dir):
    from cxrtriage.serve.settings import ServeSettings

    return ServeSettings(model_dir=model_dir, data_dir=data_dir, port=0, secret_key="test-secret-key-0123456789abcdef")


#: Every response body of the module, for the PHI grep at the end.
BODIES: list[bytes] = []


def _keep(response) -> None:
    response.read()
    BODIES.append(response.content)


@pytest.fixture(scope="module")
def url(settings):
    with running_server(settings) as base:
        yield base


def _client(base: str, auth: tuple[str, str] | None = None):
    return httpx.Client(base_url=base, timeout=120, auth=auth, event_hooks={"response": [_keep]})


@pytest.fixture(scope="module")
def study(url, example_paths) -> dict:
    """One study uploaded by the uploader."""
    with _client(url, UPLOADER) as c:
        r = c.post("/api/v1/predict", files={"file": ("a.jpg", example_paths[0].read_bytes())})
    assert r.status_code == 200, r.text
    return r.json()


def _study_urls(j: dict) -> list[str]:
    sid = j["study_id"]
    return [
        "/api/v1/studies",
        f"/api/v1/studies/{sid}",
        f"/api/v1/studies/{sid}/image.png",
        f"/api/v1/studies/{sid}/annotated.png",
        f"/api/v1/studies/{sid}/heatmap.png",
        f"/api/v1/studies/{sid}/report.json",
        f"/api/v1/studies/{sid}/report.html",
        f"/api/v1/studies/{sid}/report.pdf",
    ]


def test_unauthenticated_reads_are_refused(url, study):
    sid = study["study_id"]
    with _client(url) as anon:
        for path in _study_urls(study):
            r = anon.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert r.headers["www-authenticate"].startswith("Basic") and sid not in r.text
        with _client(url, ("rad", "wrong-password")) as wrong:
            assert wrong.get(f"/api/v1/studies/{sid}").status_code == 401
        for page in ("/", f"/studies/{sid}", "/qr.svg"):
            r = anon.get(page, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), page
        r = anon.get("/", follow_redirects=True)  # the login page: no recent-studies list, no study id
        assert r.status_code == 200 and 'name="password"' in r.text and sid not in r.text
        r = anon.post("/api/v1/predict", files={"file": ("a.jpg", b"x" * 2_000_000)})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")  # before the body is read
        assert anon.post(f"/api/v1/studies/{sid}/report/sign-off", json={}).status_code == 401
        assert anon.get("/api/v1/health").status_code == 200  # liveness stays open (no study data)
    with _client(url, RAD) as rad:
        for path in _study_urls(study):
            assert rad.get(path).status_code == 200, path
        assert sid in rad.get("/").text  # the recent-studies list, for a logged-in user


def test_roles_sign_off_and_audit_log(url, study, example_paths, data_dir):
    sid = study["study_id"]
    path = f"/api/v1/studies/{sid}/report/sign-off"
    with _client(url, UPLOADER) as up:
        r = up.post(path, json={"radiologist": "Dr Up"})
        assert r.status_code == 403 and "may not sign" in r.json()["reason"]
        assert up.get(f"/studies/{sid}").status_code == 200 and "Sign off" not in up.get(f"/studies/{sid}").text
    with _client(url, RAD) as rad:
        assert "Sign off" in rad.get(f"/studies/{sid}").text
        too_long = rad.post(f"/studies/{sid}/sign-off", data={"findings": "x" * 10_001})
        assert too_long.status_code == 422 and "10000 characters" in too_long.text  # the API's limit, on the form
        r = rad.post(path, json={"findings": "Clear lungs."})
        assert r.status_code == 200 and r.json()["report"]["signed_by"] == "rad"
    con = sqlite3.connect(data_dir / "studies.sqlite3")
    rows = con.execute("SELECT username, action, study_id, detail, at FROM audit_log WHERE study_id = ?", (sid,))
    rows = rows.fetchall()
    con.close()
    actions = {(u, a) for u, a, *_ in rows}
    assert {("up", "upload"), ("rad", "read"), ("rad", "sign_off"), ("up", "read")} <= actions
    assert {d for u, a, s, d, at in rows if a == "read"} >= {"json", "report.pdf", "image.png", "page"}
    assert all(re.match(r"\d{4}-\d\d-\d\dT", at) for *_, at in rows)


def test_browser_session_login_origin_check_and_logout(url, study):
    sid = study["study_id"]
    with _client(url) as b:
        r = b.post("/login", data={"username": RAD[0], "password": "nope", "next": "/"}, headers={"origin": url})
        assert r.status_code == 401 and "Wrong user name or password" in r.text
        r = b.post(
            "/login",
            data={"username": RAD[0], "password": RAD[1], "next": "https://evil.example/"},
            headers={"origin": url},
        )
        assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
        assert b.get(f"/api/v1/studies/{sid}").status_code == 200  # the session cookie
        page = b.get("/")
        assert page.status_code == 200 and sid in page.text
        for h, v in (
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
        ):
            assert page.headers[h] == v
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert b.get(f"/api/v1/studies/{sid}").headers["x-content-type-options"] == "nosniff"
        # cross-site form posts with the cookie are refused (CSRF), with or without an Origin
        evil = b.post("/upload", files={"file": ("a.png", b"x")}, headers={"origin": "http://evil.example"})
        assert evil.status_code == 403 and evil.json()["error"] == "cross_site_request"
        assert b.post("/logout").status_code == 403
        assert b.post("/logout", headers={"origin": url}).status_code == 303
        assert b.get(f"/api/v1/studies/{sid}").status_code == 401


def test_qr_code_carries_a_short_lived_upload_only_link(url, study, settings, example_paths):
    from cxrtriage.serve.security import UploadLinks
    from cxrtriage.serve.service import ApiError

    with _client(url, RAD) as rad:
        page = rad.get("/").text
        assert "<svg" in page and "upload link" in page
        assert rad.get("/qr.svg").headers["content-type"].startswith("image/svg")
    links = UploadLinks(settings.signing_key(), settings.upload_link_minutes * 60)
    token = links.make(UPLOADER[0])
    with _client(url) as phone:
        r = phone.get(f"/u/{token}", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        assert phone.get("/").status_code == 200
        assert phone.get("/api/v1/studies").status_code == 403  # upload-only: no list
        assert phone.get(f"/api/v1/studies/{study['study_id']}").status_code == 403  # nor others' studies
        assert phone.get("/qr.svg").status_code == 403  # nor new links
        up = phone.post(
            "/api/v1/predict", files={"file": ("p.jpg", example_paths[1].read_bytes())}, headers={"origin": url}
        )
        assert up.status_code == 200, up.text
        own = up.json()
        assert phone.get(f"/api/v1/studies/{own['study_id']}").status_code == 200
        assert phone.get(own["page_url"]).status_code == 200
        assert phone.post(f"/studies/{own['study_id']}/sign-off", data={}, headers={"origin": url}).status_code == 403
    with _client(url) as other:
        assert other.get(f"/u/{token[:-3]}abc").status_code == 403  # tampered
        forged = UploadLinks("another-key", 900).make(RAD[0])
        assert other.get(f"/u/{forged}").status_code == 403
        assert other.get(f"/u/{'x' * 5000}").status_code == 403
        assert other.get(f"/api/v1/studies/{own['study_id']}").status_code == 401
    short = UploadLinks("k", 1)
    old = short.make("up")
    time.sleep(2.1)
    with pytest.raises(ApiError, match="expired"):
        short.verify(old)


def test_hostile_uploads_get_4xx_with_a_reason(url):
    cases = {
        "frames-abcd.dcm": (hostile.dicom_bad_number_of_frames(), "NumberOfFrames"),
        "corrupt-deflate.dcm": (hostile.dicom_corrupt_deflate(), "deflate"),
        "deep-sequence.dcm": (hostile.dicom_deep_sequence(20_000), "nested"),
        "deflate-bomb.dcm": (hostile.dicom_deflate_bomb(14_000), "expands beyond"),
        "png16-49mp.png": (hostile.png_bomb(7000, 7000, "I;16"), "too large"),
        "rgb-144mp.png": (hostile.png_bomb(12_000, 12_000, "RGB"), "too large"),
        "burned-in.dcm": (hostile.dicom_with(BurnedInAnnotation="YES"), "BurnedInAnnotation"),
    }
    with _client(url, UPLOADER) as c:
        for name, (data, words) in cases.items():
            assert len(data) < 2_000_000, name
            r = c.post("/api/v1/predict", files={"file": (name, data, "application/octet-stream")})
            assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
            assert words in r.json()["reason"], (name, r.json())
        assert c.get("/api/v1/health").json()["status"] == "ok"


def test_bad_query_and_path_parameters_get_4xx(url, study):
    sid = study["study_id"]
    with _client(url, RAD) as c:
        bad = [
            "/api/v1/studies?offset=99999999999999999999",
            "/api/v1/studies?offset=-1",
            "/api/v1/studies?limit=100000",
            f"/api/v1/studies/{sid}/{'k' * 10_000}.png",
            f"/api/v1/studies/{sid}/thumbnail.png",
            f"/api/v1/studies/{sid}/report.{'x' * 5000}",
            f"/api/v1/studies/{'a' * 5000}",
            f"/studies/{sid}?duplicate=99999999999999999999999",
        ]
        for path in bad:
            r = c.get(path)
            assert 400 <= r.status_code < 500, (path[:80], r.status_code)
            if r.headers["content-type"].startswith("application/json"):
                assert r.json()["reason"], path[:80]


def test_phi_is_never_stored_or_served(url, example_paths, data_dir):
    cxr = read_image(example_paths[2])[5:]
    free_text = hostile.dicom_with(
        image=cxr.astype(np.uint16) * 16,
        BodyPartExamined="JANE DOE",
        ViewPosition="Jane Doe",
        RescaleType="DOE^JANE",
        RescaleSlope="1",
        RescaleIntercept="0",
    )
    with _client(url, RAD) as c:
        r = c.post("/api/v1/predict", files={"file": ("DOE^JANE ID-98765.dcm", free_text)})
        assert r.status_code == 200, r.text
        meta = r.json()["dicom"]
        assert "BodyPartExamined" not in meta and "ViewPosition" not in meta and "RescaleType" not in meta
        ok = hostile.dicom_with(image=cxr[2:].astype(np.uint16), ViewPosition="ap", BodyPartExamined="CHEST")
        j = c.post("/api/v1/predict", files={"file": ("x.dcm", ok)}).json()
        assert j["dicom"]["ViewPosition"] == "AP" and j["dicom"]["BodyPartExamined"] == "CHEST"
        # identity = the decoded pixels: the same pixels re-encoded as PNG are the same study
        buf = io.BytesIO()
        Image.fromarray(read_image(example_paths[3])).save(buf, format="PNG")
        a = c.post("/api/v1/predict", files={"file": ("a.jpg", example_paths[3].read_bytes())}).json()
        b = c.post("/api/v1/predict", files={"file": ("b.png", buf.getvalue())}).json()
        assert b["duplicate"] and b["study_id"] == a["study_id"]
        for sid in (r.json()["study_id"], j["study_id"]):
            for path in _study_urls({"study_id": sid}):
                assert c.get(path).status_code == 200
            c.get(f"/studies/{sid}")
    needles = [p.encode() for p in PHI] + [b"ID-98765"]
    leaks = [(i, n) for i, body in enumerate(BODIES) for n in needles if n in body]
    assert leaks == [], leaks
    for f in data_dir.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            assert not [n for n in needles if n in blob], f
    con = sqlite3.connect(data_dir / "studies.sqlite3")
    for (dump,) in con.execute("SELECT json_group_array(dicom_meta) FROM studies"):
        assert not [n for n in PHI if n in dump]
    assert con.execute("SELECT count(*) FROM studies WHERE json_valid(report) = 0").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM model_results WHERE json_valid(cam) = 0").fetchone()[0] == 0
    con.close()


def test_removed_user_loses_access_and_initial_user_from_env(model_dir, tmp_path, monkeypatch, example_paths):
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.store import StudyStore

    monkeypatch.setenv("CXRTRIAGE_INITIAL_USER", "admin")
    monkeypatch.setenv("CXRTRIAGE_INITIAL_PASSWORD", "admin-password-1")
    d = tmp_path / "d"
    with running_server(ServeSettings(model_dir=model_dir, data_dir=d, port=0)) as base:
        with httpx.Client(base_url=base, timeout=60) as b:
            r = b.post("/login", data={"username": "admin", "password": "admin-password-1"}, headers={"origin": base})
            assert r.status_code == 303
            assert b.get("/api/v1/studies").status_code == 200
            store = StudyStore(d)
            assert [(u.username, u.role) for u in store.users()] == [("admin", "radiologist")]
            assert store.users()[0].password_hash.startswith("$argon2id$")
            store.remove_user("admin")
            store.close()
            assert b.get("/api/v1/studies").status_code == 401  # live session of a removed user
    assert (d / ".secret_key").stat().st_mode & 0o077 == 0  # the generated signing key is private


def test_cxr_users_cli(tmp_path, monkeypatch, capsys):
    """``cxr users add|list|remove`` (in-process ``main``; one real subprocess for --password-stdin)."""
    from cxrtriage.cli.main import main

    d = str(tmp_path / "u")

    def cxr(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["users", *args, "--data-dir", d])
        out = capsys.readouterr()
        return code, out.out, out.err

    assert "no users yet" in cxr("list")[1]
    r = subprocess.run(
        [sys.executable, "-m", "cxrtriage.cli", "users", "add", "alice", "--role", "radiologist"]
        + ["--password-stdin", "--data-dir", d],
        input="alice-password\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and "user alice (radiologist) added" in r.stdout, r.stderr
    code, _, err = cxr("add", "alice", "--role", "uploader", "--password-stdin", stdin="another-password\n")
    assert code == 2 and "exists already" in err
    code, _, err = cxr("add", "bob", "--role", "uploader", "--password-stdin", stdin="short\n")
    assert code == 2 and "too short" in err
    code, _, err = cxr("add", "../x", "--role", "uploader", "--password-stdin", stdin="long-enough-pw\n")
    assert code == 2 and "user name" in err
    assert cxr("list")[1].split()[:2] == ["alice", "radiologist"]
    assert "alice-password" not in (tmp_path / "u" / "studies.sqlite3").read_bytes().decode("latin-1")
    assert cxr("remove", "alice")[0] == 0
    code, _, err = cxr("remove", "alice")
    assert code == 2 and "no user" in err


def test_pdf_keeps_non_latin1_names():
    """The PDF embeds DejaVu Sans: a signer's name outside Latin-1 is not turned into '?'."""
    import zlib

    from cxrtriage.report import build_report, render_pdf, sign_off
    from cxrtriage.report.render import _dejavu_dir

    if _dejavu_dir() is None:
        pytest.skip("no DejaVu fonts (matplotlib or fonts-dejavu-core)")
    r = build_report(
        results=[
            dict(
                task="pneumonia",
                label="NORMAL",
                probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1},
                threshold=0.5,
                positive_class="PNEUMONIA",
                triage="no_finding",
                model_name="m",
                model_version="v",
            )
        ],
        study_id="0123456789abcdef",
    )
    pdf = render_pdf(sign_off(r, "Dr Łukasz Żółć (lz)", "Ёлка: no consolidation.", None))
    streams = re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S)
    text = (pdf + b"".join(zlib.decompress(s) for s in streams if s[:2] == b"x\x9c")).upper()
    for ch in "ŁŻółćЁ":  # the ToUnicode map of the embedded font subset lists each glyph's code point
        assert f"<{ord(ch):04X}>".encode() in text, ch
    assert b"Dr ?ukasz" not in pdf


def test_store_removes_stale_temporary_files_and_caches_pdfs(tmp_path, url, study, data_dir):
    import os

    from cxrtriage.store import StudyStore

    d = tmp_path / "store"
    (d / "images" / "ab").mkdir(parents=True)
    stale = d / "images" / "ab" / ".abc.png.123.456.tmp"
    fresh = d / "images" / "ab" / ".def.png.123.456.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    StudyStore(d).close()
    assert not stale.exists() and fresh.exists()  # a write in progress elsewhere is left alone
    with _client(url, RAD) as c:
        pdf = c.get(f"/api/v1/studies/{study['study_id']}/report.pdf").content
        cached = list((data_dir / "derived").glob(f"{study['study_id']}-report-*.pdf"))
        assert cached and any(p.read_bytes() == pdf for p in cached)
        assert c.get(f"/api/v1/studies/{study['study_id']}/report.pdf").content == pdf


def test_failed_login_throttle_and_upload_quota(model_dir, tmp_path, example_paths):
    from cxrtriage.serve.security import MAX_FAILED_LOGINS
    from cxrtriage.serve.settings import ServeSettings

    d = tmp_path / "q"
    add_user(d, *UPLOADER, "uploader")
    with running_server(ServeSettings(model_dir=model_dir, data_dir=d, port=0, upload_quota_per_hour=2)) as base:
        with _client(base, UPLOADER) as c:
            codes = [
                c.post("/api/v1/predict", files={"file": ("a.jpg", example_paths[k].read_bytes())}).status_code
                for k in range(3)
            ]
            assert codes == [200, 200, 429]
        with _client(base, (UPLOADER[0], "wrong-password")) as bad:
            codes = [bad.get("/api/v1/studies").status_code for _ in range(MAX_FAILED_LOGINS + 1)]
        assert codes == [401] * MAX_FAILED_LOGINS + [429]
        with _client(base, UPLOADER) as c:  # the right password from the same client waits too
            r = c.get("/api/v1/studies/0123456789abcdef")
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_cli_parser_does_not_import_the_store():
    """``cxr --help`` and ``cxr demo`` work with the base install (no SQLAlchemy): the users CLI imports lazily."""
    code = (
        "import sys; from cxrtriage.cli.main import build_parser; build_parser(); "
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'; "
        "from cxrtriage.cli.users import _ROLES; from cxrtriage.store.models import ROLES; "
        "assert _ROLES == ROLES, 'roles differ'"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
