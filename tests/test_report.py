"""Draft reports: templates per task, sign-off, JSON/HTML/PDF rendering."""

from __future__ import annotations

import json

import pytest

from cxrtriage import DISCLAIMER
from cxrtriage.report import ReportError, build_report, render_html, render_json, render_pdf, sign_off
from cxrtriage.tasks import TASKS


def _result(task="pneumonia", label="PNEUMONIA", triage="finding", probs=None, threshold=0.4, name="m", **kw):
    classes = TASKS[task].classes
    probs = probs or {c: (0.9 if c == label else 0.1 / (len(classes) - 1)) for c in classes}
    return dict(
        task=task,
        label=label,
        probabilities=probs,
        threshold=threshold,
        positive_class=TASKS[task].positive_class,
        triage=triage,
        model_name=name,
        model_version="v1",
        heatmap_url=f"/h.png?model={name}",
        **kw,
    )


def _report(task="pneumonia", label="PNEUMONIA", triage="finding", probs=None, threshold=0.4):
    return build_report(results=[_result(task, label, triage, probs, threshold)], study_id="0123456789abcdef")


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_has_normal_and_abnormal_drafts(task):
    spec = TASKS[task]
    normal = _report(task, spec.normal_classes[0], "no_finding")
    assert normal["status"] == "draft" and not normal["abnormal"] and normal["flag"] is None
    assert "to be confirmed by a radiologist" in normal["sections"]["impression"]
    assert normal["sections"]["findings"] and normal["heatmap_url"] is None
    pos = next(c for c in spec.classes if c not in spec.normal_classes)
    ab = _report(task, pos, "finding")
    assert ab["abnormal"] and "ABNORMAL" in ab["flag"] and "90.0%" in ab["flag"]
    assert ab["sections"]["findings"] == "" and ab["findings_placeholder"]
    assert ab["heatmap_url"] == "/h.png?model=m" and ab["flagged_by"] == ["m"]
    for r in (normal, ab):
        assert r["disclaimer"] == DISCLAIMER and DISCLAIMER in r["text"]
        assert "Not signed" in r["text"]


def test_pneumonia_normal_text():
    r = _report("pneumonia", "NORMAL", "no_finding")
    assert r["sections"]["findings"].startswith("Both lungs clear.")
    assert "Heart and diaphragm normal" in r["sections"]["findings"]
    assert r["sections"]["impression"].startswith("No acute cardiopulmonary finding")


def test_sign_off():
    r = _report()
    s = sign_off(r, "  Dr Who ", findings="Left basal consolidation.")
    assert r["status"] == "draft"  # original untouched
    assert s["status"] == "signed" and s["signed_by"] == "Dr Who" and s["signed_at"].endswith("+00:00")
    assert s["sections"]["findings"] == "Left basal consolidation." and "Signed by Dr Who" in s["text"]
    with pytest.raises(ReportError, match="already signed"):
        sign_off(s, "Dr X")
    with pytest.raises(ReportError, match="name"):
        sign_off(r, "   ")


def test_renderings(example_paths):
    r = sign_off(_report(), "<script>alert(1)</script>")
    js = json.loads(render_json(r))
    assert js == r
    html = render_html(r, [("image", b"\x89PNG fake")])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert DISCLAIMER in html and "data:image/png;base64," in html
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(example_paths[0]).convert("RGB").save(buf, format="PNG")
    pdf = render_pdf(r, [("AI annotation", buf.getvalue()), ("Heatmap", buf.getvalue())])
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 5000
    # non-Latin-1 text must not break the PDF
    r2 = sign_off(_report(), "Dr Øyvind Ærø \u2014 \u4e2d\u6587")
    assert render_pdf(r2).startswith(b"%PDF")


def test_several_models_combine():
    """'No finding' only when every applicable model says so; a finding names its models; warned models listed."""
    ped_finding = _result("pneumonia", "PNEUMONIA", "finding", name="ped")
    adult_normal = _result("finding", "no_finding", "no_finding", name="adult")
    adult_finding = _result("finding", "finding", "finding", name="adult")
    r = build_report(results=[ped_finding, adult_normal], study_id="0123456789abcdef")
    assert r["abnormal"] and r["flagged_by"] == ["ped"] and "ped" in r["flag"] and "adult" not in r["flag"]
    assert r["heatmap_url"] == "/h.png?model=ped" and [a["model_name"] for a in r["ai_results"]] == ["ped", "adult"]
    # the pediatric model outside its population: its finding is shown with the warning, not counted
    warned = dict(
        ped_finding,
        applicable=False,
        population_warning="outside the validated population: pediatric model, adult image",
    )
    r = build_report(results=[warned, adult_normal], study_id="0123456789abcdef")
    assert not r["abnormal"] and r["flag"] is None and r["flagged_by"] == []
    assert "No finding by any applicable model (adult)" in r["sections"]["impression"]
    assert "WARNING: outside the validated population: pediatric model, adult image" in r["text"]
    assert r["ai_results"][0]["applicable"] is False and r["ai_results"][0]["flag"] is True
    r = build_report(results=[warned, adult_finding], study_id="0123456789abcdef")
    assert r["abnormal"] and r["flagged_by"] == ["adult"]
    html = render_html(r)
    assert "pediatric model, adult image" in html and DISCLAIMER in html
    assert render_pdf(r).startswith(b"%PDF")
    none_apply = build_report(results=[warned], study_id="0123456789abcdef")
    assert not none_apply["abnormal"] and "No AI result applies" in none_apply["sections"]["impression"]
    assert none_apply["sections"]["findings"] == ""
    with pytest.raises(ValueError):
        build_report(results=[], study_id="0123456789abcdef")
