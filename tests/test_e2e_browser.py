"""End to end in headless Chromium: open the upload page, upload a real CXR, read the result page.

Needs the Debian package ``chromium`` (``/usr/bin/chromium``) and the Python
package ``playwright`` (no browser download: the system Chromium is used).
Screenshots go to ``test-artifacts/`` (and to ``docs/screenshots/`` with ``CXRTRIAGE_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cxrtriage import DISCLAIMER
from cxrtriage.models.bundle import shipped_models
from cxrtriage.serve.testing import add_user, find_model_dir, running_server

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    if find_model_dir() is None:
        pytest.skip("no trained model")
    from cxrtriage.serve.settings import ServeSettings

    tmp = tmp_path_factory.mktemp("e2e")
    add_user(tmp / "data", "drbrowser", "browser-password", "radiologist")
    settings = ServeSettings(model_dir=None, data_dir=tmp / "data", port=0)  # every shipped model
    with running_server(settings) as url:
        yield url


def save_screenshot(page, name: str, full_page: bool = True) -> Path:
    """Screenshot to ``test-artifacts/NAME``; with ``CXRTRIAGE_UPDATE_SCREENSHOTS=1`` also a small palette PNG
    (128 colours) in ``docs/screenshots/`` for the README and the docs."""
    out = REPO / "test-artifacts" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=full_page)
    if os.environ.get("CXRTRIAGE_UPDATE_SCREENSHOTS") == "1":
        from PIL import Image

        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        with Image.open(out) as im:
            im.convert("RGB").quantize(colors=128).save(docs / name, optimize=True)
    return out


def _login(page, base_url: str, password: str = "browser-password") -> None:
    """Open the upload page: redirected to the login page, log in there, back on the upload page."""
    page.goto(base_url + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", "drbrowser")
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")


def test_upload_and_result_page(browser, base_url, example_paths):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _login(page, base_url, "wrong-password")
    assert "Wrong user name or password" in page.inner_text("#message")
    _login(page, base_url)
    page.wait_for_url(base_url + "/")
    assert DISCLAIMER in page.inner_text("body") and "drbrowser" in page.inner_text("#user")
    assert page.locator(".qr-img svg").count() == 1
    save_screenshot(page, "upload-page.png", full_page=False)

    img = next(p for p in example_paths if p.name.startswith("PNEUMONIA"))
    page.set_input_files("#file", str(img))
    page.wait_for_url("**/studies/*", timeout=30_000)
    page.wait_for_selector("#model-results .probs")
    body = page.inner_text("body")
    assert DISCLAIMER in body
    label = page.inner_text(".model-result .model-label")
    assert label in ("NORMAL", "PNEUMONIA")
    probs = page.inner_text(".model-result .probs")
    assert "NORMAL" in probs and "PNEUMONIA" in probs and "%" in probs
    assert page.inner_text("#report-status") == "DRAFT"
    assert "Impression" in page.inner_text("#report")
    for sel in (".model-result img.annotated", ".model-result img.heatmap"):
        page.wait_for_function(
            f"document.querySelector('{sel}').complete && document.querySelector('{sel}').naturalWidth > 0",
            timeout=30_000,
        )
        assert page.eval_on_selector(sel, "e => e.naturalWidth") >= 224
    shot = save_screenshot(page, "result-page.png")
    assert shot.stat().st_size > 50_000

    # sign the report off through the page, agreeing with the AI's call
    page.click("#signoff-details summary")
    page.check("#agree-yes")
    page.fill("input[name=radiologist]", "Dr Browser")
    page.click("form.signoff button[type=submit]")
    page.wait_for_url("**signed=1")
    assert page.inner_text("#report-status") == "SIGNED"
    assert page.inner_text("#signed-by") == "Dr Browser (drbrowser)"
    # log out: the study is no longer readable
    study_url = page.url.split("?")[0]
    page.click("header .logout button")
    page.wait_for_url("**/login")
    page.goto(study_url)
    assert "/login" in page.url and "Dr Browser" not in page.inner_text("body")
    page.close()


def test_refusal_shown_on_page(browser, base_url, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844})  # phone-sized
    _login(page, base_url)
    page.wait_for_url(base_url + "/")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"plain text, not an image" * 10)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "415" in page.inner_text("#status")
    assert page.url.rstrip("/") == base_url
    save_screenshot(page, "upload-page-phone-refusal.png", full_page=False)
    page.close()


def _adult_cxr(data: Path) -> Path:
    """A COVID-19 Radiography Database 'Normal' (adult) image of the gates' test part (never fitted on)."""
    from cxrtriage.ood.gate import gate_part
    from cxrtriage.ood.population import population_rows

    return next(
        p
        for pop, src, key, p in population_rows(data)
        if src == "covid19-radiography/Normal" and gate_part(key) == "test"
    )


def test_adult_and_pediatric_uploads_show_the_right_models(browser, base_url, example_paths, shared_data_dir):
    """An adult image: the adult model's result applies, the pediatric models carry the warning; a pediatric
    image (shipped example): the reverse. Every model's block and heatmap is on the page."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    _login(page, base_url)
    page.wait_for_url(base_url + "/")
    models = page.inner_text(".model")
    assert "finding-efficientnet_lite0" in models and "pneumonia-type-efficientnet_lite0" in models
    cases = {
        "adult": (
            _adult_cxr(shared_data_dir),
            "pediatric model, adult image",
            {"finding-efficientnet_lite0", "lung-opacity-efficientnet_lite0"},
        ),
        "pediatric": (
            next(p for p in example_paths if p.name.startswith("NORMAL")),
            "adult model, pediatric image",
            {"pneumonia-efficientnet_lite0", "pneumonia-type-efficientnet_lite0"},
        ),
    }
    for who, (img, warning, applicable) in cases.items():
        page.goto(base_url + "/")
        page.set_input_files("#file", str(img))
        page.wait_for_url("**/studies/*", timeout=30_000)
        page.wait_for_selector("#model-results .probs")
        blocks = page.locator(".model-result")
        n_models = len(shipped_models())
        assert blocks.count() == n_models, who
        for i in range(n_models):
            b = blocks.nth(i)
            name = b.get_attribute("data-model")
            warned = b.locator(".population-warning")
            if name in applicable:
                assert warned.count() == 0, (who, name)
            else:
                assert warned.count() == 1 and warning in warned.inner_text(), (who, name)
            assert b.locator("img.heatmap").count() == 1 and b.locator("a", has_text="Model card").count() == 1
        sid = page.url.split("?")[0].rstrip("/").rsplit("/", 1)[1]
        report = page.request.get(f"{base_url}/api/v1/studies/{sid}/report.html").text()
        assert warning in report, who
        if who == "adult":  # the docs show this one (docs/serving.md)
            save_screenshot(page, "result-page-adult.png")
    page.close()
