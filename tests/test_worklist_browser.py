"""The reading workflow end to end in headless Chromium: worklist, viewer, sign-off with amendment, monitoring.

Ten real uploads (the eight shipped examples and two more Kermany images: five pneumonia, five normal)
through every shipped model; the worklist shows the flagged ones first and an eleventh upload without a
reload; ``j``/``k``/``Enter`` open a study; window/level changes the displayed pixels of a 16-bit DICOM; a
radiologist signs a study disagreeing with the AI and amends it (both versions kept); the monitoring page
shows the figures :func:`cxrtriage.metrics.agreement.agreement` computes for those reads. Screenshots of
the worklist, the viewer and the monitoring page go to ``test-artifacts/`` (and ``docs/screenshots/``
with ``CXRTRIAGE_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest

from cxrtriage.metrics.agreement import agreement
from cxrtriage.metrics.report import format_estimate
from cxrtriage.serve.testing import add_user, running_server
from test_e2e_browser import CHROMIUM, browser, save_screenshot  # noqa: F401 - the module-scoped Chromium fixture

USER, PASSWORD = "drworklist", "worklist-password"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (apt-get install chromium)")


def _kermany(kermany_dir: Path, label: str, k: int) -> Path:
    with open(kermany_dir / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == label]
    return kermany_dir / rows[100 * (k + 1)]["path"]


def _dicom16(example: Path) -> bytes:
    """A 16-bit (12 bits stored) DICOM made from a real example: pixel values spread over 0-4000."""
    from cxrtriage.data.dicom import write_dicom
    from cxrtriage.data.io import read_image

    img = read_image(example).astype(np.float64)
    px = np.round(img / 255.0 * 4000.0).astype(np.uint16)
    buf = io.BytesIO()
    write_dicom(buf, px, bits=16, window=(2000, 4000))
    return buf.getvalue()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    from cxrtriage.serve.settings import ServeSettings, all_shipped_model_dirs

    tmp = tmp_path_factory.mktemp("worklist")
    add_user(tmp / "data", USER, PASSWORD, "radiologist")
    settings = ServeSettings(
        model_dir=None, model_dirs=all_shipped_model_dirs(), data_dir=tmp / "data", port=0, threads=1
    )
    with running_server(settings) as url:
        yield url


def _upload(page, path: Path | None = None, data: bytes | None = None, name: str = "x") -> dict:
    body = path.read_bytes() if path is not None else data
    origin = "/".join(page.url.split("/")[:3])  # the session cookie's POSTs need their Origin (CSRF check)
    r = page.request.post(
        "/api/v1/predict",
        headers={"Origin": origin},
        multipart={
            "file": {"name": path.name if path else name, "mimeType": "application/octet-stream", "buffer": body}
        },
    )
    assert r.ok, r.text()
    return r.json()


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("#worklist-rows tr[data-study-id]", "rs => rs.map(r => r.dataset.studyId)")


def test_reading_workflow(browser, base_url, example_paths, kermany_dir):  # noqa: F811 - the imported fixture
    page = browser.new_page(viewport={"width": 1200, "height": 820}, base_url=base_url)
    page.goto("/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/worklist")  # the radiologist's landing page

    uploads = [*example_paths, _kermany(kermany_dir, "PNEUMONIA", 0), _kermany(kermany_dir, "NORMAL", 0)]
    assert sum("PNEUMONIA" in str(p) for p in uploads) == 5
    studies = {}
    for p in uploads:
        j = _upload(page, p)
        studies[j["study_id"]] = j
    assert len(studies) == 10

    page.goto("/worklist")
    page.wait_for_selector("#worklist[data-ready='1']")
    ids = _rows(page)
    assert sorted(ids) == sorted(studies)
    triage = [studies[i]["triage"] for i in ids]
    n_flagged = triage.count("finding")
    assert 0 < n_flagged < 10 and triage == ["finding"] * n_flagged + ["no_finding"] * (10 - n_flagged)
    flagged_prio = [studies[i]["priority"] for i in ids[:n_flagged]]
    assert flagged_prio == sorted(flagged_prio, reverse=True)
    assert page.inner_text("#count-unread-flagged") == str(n_flagged)
    save_screenshot(page, "worklist.png", full_page=False)

    # an eleventh upload appears without a reload
    eleventh = _upload(page, _kermany(kermany_dir, "PNEUMONIA", 1))
    page.wait_for_selector("#worklist[data-count='11']", timeout=15_000)
    assert eleventh["study_id"] in _rows(page)
    ids = _rows(page)

    # keyboard: j j k selects the second row, Enter opens it
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.get_attribute("#worklist", "data-selected") == ids[1]
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/studies/{ids[1]}")
    page.wait_for_selector("#viewer[data-ready='1']")

    # sign off disagreeing with the AI, then amend: both versions kept
    target = ids[1]
    ai_finding = studies.get(target, eleventh)["triage"] == "finding"
    page.click("#signoff-details summary")
    page.check("#agree-no")
    page.fill("textarea[name=impression]", "First reading.")
    page.click("#signoff-form button[type=submit]")
    page.wait_for_url("**signed=1")
    assert page.inner_text("#reader-label") == ("no_finding" if ai_finding else "finding")
    page.click("#signoff-details summary")
    page.check("#agree-no")
    page.fill("textarea[name=impression]", "Amended reading.")
    page.click("#signoff-form button[type=submit]")
    page.wait_for_url("**signed=1")
    assert page.locator("#versions tr.version").count() == 2
    versions = page.request.get(f"/api/v1/studies/{target}/report/versions").json()["versions"]
    assert [v["kind"] for v in versions] == ["sign", "amend"]
    assert [v["report"]["sections"]["impression"] for v in versions] == ["First reading.", "Amended reading."]
    assert page.request.get(f"/api/v1/studies/{target}").json()["read_status"] == "amended"
    # a second read, agreeing, on the first row
    page.goto(f"/studies/{ids[0]}")
    page.click("#signoff-details summary")
    page.check("#agree-yes")
    page.click("#signoff-form button[type=submit]")
    page.wait_for_url("**signed=1")

    # window/level on a 16-bit DICOM changes the displayed pixels
    dcm = _upload(page, data=_dicom16(example_paths[0]), name="study.dcm")
    assert dcm["original_url"]
    page.goto(f"/studies/{dcm['study_id']}")
    page.wait_for_selector("#viewer[data-ready='1']")
    assert page.get_attribute("#viewer", "data-bits") == "16"
    pixels = "() => Array.from(document.getElementById('viewer-canvas').getContext('2d').getImageData(0, 0, 720, 720).data.filter((_, i) => i % 4 === 0)).reduce((a, b) => a + b, 0)"
    before = page.evaluate(pixels)
    page.evaluate(
        "() => { const w = document.getElementById('wl-width'); w.value = 600; w.dispatchEvent(new Event('input')); }"
    )
    page.evaluate(
        "() => { const c = document.getElementById('wl-center'); c.value = 1200; c.dispatchEvent(new Event('input')); }"
    )
    assert page.get_attribute("#viewer", "data-window") == "1200,600"
    after = page.evaluate(pixels)
    assert after != before
    page.click("#zoom-reset")
    assert page.evaluate(pixels) == before  # back to the default window
    save_screenshot(page, "viewer-dicom-16bit.png", full_page=False)
    # a flagged study with a model's heatmap over it
    page.goto(f"/studies/{ids[2]}")
    page.wait_for_selector("#viewer[data-ready='1']")
    assert page.locator("#heat-select option").count() >= 2
    page.select_option("#heat-select", index=1)
    page.wait_for_selector("#viewer[data-heat]")
    page.locator("#viewer").scroll_into_view_if_needed()
    save_screenshot(page, "viewer.png", full_page=False)

    # the monitoring page shows what the metrics code computes for these two reads
    page.goto("/monitoring")
    reads = [page.request.get(f"/api/v1/studies/{sid}").json() for sid in (target, ids[0])]
    wl = {it["study_id"]: it for it in page.request.get("/api/v1/worklist", params={"limit": 50}).json()["items"]}
    truth_of = {target: not ai_finding, ids[0]: wl[ids[0]]["triage"] == "finding"}
    assert reads[0]["reference_label"] == ("no_finding" if ai_finding else "finding")
    for name in {r["model_name"] for sid in truth_of for r in wl[sid]["results"]}:
        rs = [(sid, r) for sid in truth_of for r in wl[sid]["results"] if r["model_name"] == name]
        expected = agreement([truth_of[sid] for sid, _ in rs], [r["flag"] for _, r in rs], n_boot=1000)
        row = page.locator(f"#agreement tr[data-model='{name}']")
        assert row.locator("td.n").inner_text() == str(expected.n)
        for metric in ("sensitivity", "specificity", "ppv", "npv"):
            assert row.locator(f"td.{metric}").inner_text() == format_estimate(expected.metrics[metric])
    for img in ("#plot-agreement", "#plot-drift", "#plot-turnaround"):
        page.wait_for_function(
            f"document.querySelector('{img}').complete && document.querySelector('{img}').naturalWidth > 0"
        )
    monitoring_csv = page.request.get("/api/v1/monitoring.csv").text()
    assert monitoring_csv.startswith("model,period,metric") and "sensitivity" in monitoring_csv
    save_screenshot(page, "monitoring.png", full_page=False)
    page.close()
