"""The HTTP API keeps its own contract: Schemathesis against a real server, for about a minute.

Schemathesis (``st run``, the real CLI in a subprocess) reads ``/openapi.json`` from a live
uvicorn server with one radiologist user and one stored study, generates valid and invalid
requests for every operation in the schema (HTTP Basic as the radiologist) and checks every
answer with ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``
and ``response_schema_conformance``: no 5xx for any input, and every status code, media type
and JSON body is the one the schema declares. Nothing is excluded: the multipart upload
``POST /api/v1/predict`` gets generated (mostly non-image) bodies, which must be refused with
a declared 4xx. The pages (``/``, ``/login``, ...) are HTML and not in the schema.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrtriage.serve.testing import add_user, copy_model_dir, find_model_dir, running_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow

RAD = ("rad", "rad-password-1")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
#: Time budget of the Schemathesis run, seconds ($CXRTRIAGE_SCHEMATHESIS_SECONDS; about a minute by default).
MAX_TIME = int(os.environ.get("CXRTRIAGE_SCHEMATHESIS_SECONDS", "50"))


@pytest.fixture(scope="module")
def url(tmp_path_factory, example_paths):
    from cxrtriage.serve.settings import ServeSettings

    src = find_model_dir()
    if src is None:
        pytest.skip("no trained model (shipped model missing and $CXRTRIAGE_TEST_MODEL unset)")
    model_dir = copy_model_dir(src, tmp_path_factory.mktemp("contract-model") / src.name)
    data_dir = tmp_path_factory.mktemp("contract-data")
    add_user(data_dir, *RAD, "radiologist")
    settings = ServeSettings(
        model_dir=model_dir, data_dir=data_dir, port=0, secret_key="test-secret-key-0123456789abcdef"
    )
    with running_server(settings) as base:
        with httpx.Client(base_url=base, auth=RAD, timeout=120) as c:
            r = c.post("/api/v1/predict", files={"file": ("a.jpg", example_paths[0].read_bytes())})
            assert r.status_code == 200, r.text
        yield base


DOC = Path(__file__).resolve().parents[1] / "docs" / "reference" / "openapi.json"


def test_docs_openapi_document_is_current():
    """The docs site renders docs/reference/openapi.json: it must be the app's current schema."""
    from cxrtriage.serve.app import openapi_schema

    current = json.loads(json.dumps(openapi_schema()))
    assert json.loads(DOC.read_text(encoding="utf-8")) == current, (
        "docs/reference/openapi.json is out of date: run `python scripts/export_openapi.py`"
    )


def test_openapi_schema_declares_errors_and_binary_responses(url):
    """The schema itself: typed errors on every study operation, PNG and PDF declared, bounded parameters."""
    schema = httpx.get(f"{url}/openapi.json", timeout=30).json()
    paths = schema["paths"]
    listing = paths["/api/v1/studies"]["get"]
    offset = next(p for p in listing["parameters"] if p["name"] == "offset")
    assert offset["schema"]["minimum"] == 0 and "maximum" in offset["schema"]
    picture = paths["/api/v1/studies/{study_id}/{kind}.png"]["get"]
    assert "image/png" in picture["responses"]["200"]["content"]
    kind = next(p for p in picture["parameters"] if p["name"] == "kind")
    assert "enum" in str(kind["schema"]) or "$ref" in str(kind["schema"])
    report = paths["/api/v1/studies/{study_id}/report.{fmt}"]["get"]
    assert {"application/json", "text/html", "application/pdf"} <= set(report["responses"]["200"]["content"])
    for path, ops in paths.items():
        if not path.startswith("/api/v1/studies") and path != "/api/v1/predict":
            continue
        for method, op in ops.items():
            for code in ("401", "403", "422"):
                assert code in op["responses"], (method, path, code)
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)


def test_schemathesis_finds_no_contract_violation(url, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--auth",
        ":".join(RAD),
        "--max-time",
        str(MAX_TIME),
        "--workers",
        "1",
        "--seed",
        "17",
        "--request-timeout",
        "60",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=MAX_TIME + 240, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    print(out[out.rfind("Test cases:") :])  # how many cases, for the log (pytest -rP)
    assert proc.returncode == 0, f"Schemathesis found contract violations:\n{out[-12000:]}"
    assert "No issues found" in out or "passed" in out, out[-4000:]
    assert list(Path(tmp_path).glob("junit*.xml")), "no JUnit report written"
