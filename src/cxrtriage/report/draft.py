"""Structured draft radiology reports from a model prediction.

One JSON template per task (``report/templates/<task>.json``, fallback
``default.json``) holds the wording: a pre-filled normal report for negative
studies, and for positive studies an ``abnormal`` flag naming the predicted
class and its probability, the heatmap reference and an empty findings field
left for the radiologist. One report combines the results of every model that
analysed the image: "no finding" only when every applicable model says so, a
finding names the models that raised it, and models outside their validated
population are listed with their warning. Every report starts with ``status = "draft"`` and
carries :data:`cxrtriage.DISCLAIMER`; it becomes ``"signed"`` only through
:func:`sign_off` (who and when are recorded).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from cxrtriage import DISCLAIMER

__all__ = ["build_report", "sign_off", "amend", "report_text", "ai_result_line", "load_template", "ReportError"]


class ReportError(ValueError):
    """A report operation is not allowed (e.g. signing an already signed report)."""


@cache
def _template_json(task: str) -> str:
    folder = resources.files("cxrtriage.report") / "templates"
    f = folder / f"{task}.json"
    if not f.is_file():
        f = folder / "default.json"
    return f.read_text(encoding="utf-8")


def load_template(task: str) -> dict:
    """The report template of a task (``default.json`` when it has none), as a fresh ``dict``."""
    return json.loads(_template_json(task))


def _pct(p: float | None) -> str:
    if p is None:
        return "n/a"
    v = 100.0 * p
    return f"{v:.1f}%" if v >= 1 or v == 0 else f"{v:.2g}%"


def _model_part(r: Mapping[str, Any]) -> dict:
    """One model's entry of ``ai_results``: its output, its own flag text from its task's template, applicability."""
    t = load_template(r["task"])
    label = r["label"]
    probs = {k: float(v) for k, v in r["probabilities"].items()}
    prob = float(probs.get(label, 0.0))
    threshold = r.get("threshold")
    flag = r["triage"] == "finding"
    values = {
        "label": label,
        "label_text": t.get("label_text", {}).get(label, label),
        "probability_pct": _pct(prob),
        "threshold_pct": _pct(threshold) if threshold is not None else "argmax",
    }
    applicable = bool(r.get("applicable", True))
    return {
        "model_name": r["model_name"],
        "model_version": r["model_version"],
        "task": r["task"],
        "label": label,
        "probability": prob,
        "probabilities": probs,
        "threshold": threshold,
        "positive_class": r.get("positive_class") or "",
        "triage": r["triage"],
        "flag": flag,
        "flag_text": t["abnormal"]["flag"].format(**values) if flag else None,
        "impression": t["abnormal" if flag else "normal"]["impression"].format(**values),
        "applicable": applicable,
        "population_warning": None
        if applicable
        else (r.get("population_warning") or "outside the validated population"),
        "heatmap_url": r.get("heatmap_url"),
        "cam_in_lungs": r.get("cam_in_lungs"),
    }


def build_report(
    *,
    results: Sequence[Mapping[str, Any]],
    study_id: str,
    created_at: str | None = None,
) -> dict:
    """Fill the draft report of one image from the results of one or more models.

    The report is abnormal when at least one *applicable* model (inside the
    population it was validated on) flags a finding; the flag names every
    such model. "No finding" is written only when every applicable model
    says so. Results of models outside their population are listed with
    their warning and never change the triage.

    Parameters
    ----------
    results : sequence of mapping
        One per model, in display order, with keys ``task``, ``label``,
        ``probabilities`` (dict str -> float in [0, 1]), ``threshold`` (float or
        None), ``positive_class``, ``triage`` ({"no_finding", "finding"}),
        ``model_name``, ``model_version`` and optionally ``applicable`` (bool,
        default True), ``population_warning`` (str), ``heatmap_url`` and ``cam_in_lungs`` (share of the
        heatmap inside the lung fields, in [0, 1], or None).
    study_id : str
    created_at : str, optional
        ISO 8601 UTC time; default now.

    Returns
    -------
    dict
        JSON-serialisable report: ``status`` ("draft"), ``abnormal`` (bool),
        ``flag`` (None when normal), ``flagged_by`` (model names),
        ``sections`` (technique, findings, impression), ``findings_placeholder``,
        ``ai_results`` (one dict per model: output, ``flag``, ``flag_text``,
        ``applicable``, ``population_warning``, ``heatmap_url``), ``heatmap_url``
        (of the first flagging model), ``signed_by``/``signed_at`` (None),
        ``disclaimer`` and ``text``.

    Raises
    ------
    ValueError
        ``results`` is empty.
    """
    if not results:
        raise ValueError("build_report: no model result")
    parts = [_model_part(r) for r in results]
    applicable = [p for p in parts if p["applicable"]]
    flagged = [p for p in applicable if p["flag"]]
    abnormal = bool(flagged)
    first = load_template(results[0]["task"])
    if len(parts) == 1:
        title, technique = first["title"], first["technique"]
    else:
        title = f"Chest radiograph: AI draft report ({len(parts)} models)"
        technique = (
            f"Single frontal chest radiograph, analysed by {len(parts)} AI classifiers: "
            + ", ".join(f"{p['model_name']} ({p['task']})" for p in parts)
            + "."
        )
    if abnormal:
        lead = load_template(flagged[0]["task"])
        flag = (
            "ABNORMAL, raised by "
            + ", ".join(p["model_name"] for p in flagged)
            + ": "
            + " ".join(f"[{p['model_name']}] {p['flag_text'].removeprefix('ABNORMAL: ')}" for p in flagged)
        )
        findings = ""
        placeholder = lead["abnormal"].get("findings_placeholder", "")
        # each template ends its impression with the same "AI draft, to be confirmed..." sentence: say it once
        heads = [p["impression"].split(" AI draft", 1) for p in flagged]
        impression = " ".join(dict.fromkeys(h[0] for h in heads))
        tail = next((h[1] for h in heads if len(h) == 2), None)
        if tail is not None:
            impression += " AI draft" + tail
    elif applicable:
        lead = load_template(applicable[0]["task"])
        flag = None
        findings = lead["normal"]["findings"]
        placeholder = ""
        impression = (
            lead["normal"]["impression"]
            if len(parts) == 1
            else f"No finding by any applicable model ({', '.join(p['model_name'] for p in applicable)}). "
            + lead["normal"]["impression"]
        )
    else:
        flag = None
        findings = ""
        placeholder = "Findings to be described by the radiologist (no AI model applies to this image)."
        impression = (
            "No AI result applies: the image lies outside the population every model was validated on. "
            "To be read by a radiologist."
        )
    report = {
        "study_id": study_id,
        "title": title,
        "status": "draft",
        "abnormal": abnormal,
        "flag": flag,
        "flagged_by": [p["model_name"] for p in flagged],
        "sections": {"technique": technique, "findings": findings, "impression": impression},
        "findings_placeholder": placeholder,
        "ai_results": parts,
        "heatmap_url": flagged[0]["heatmap_url"] if flagged else None,
        "created_at": created_at or _now(),
        "signed_by": None,
        "signed_at": None,
        "disclaimer": DISCLAIMER,
    }
    report["text"] = report_text(report)
    return report


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def sign_off(
    report: dict,
    radiologist: str,
    findings: str | None = None,
    impression: str | None = None,
    when: str | None = None,
    reader: dict | None = None,
) -> dict:
    """Return a signed copy of a draft report.

    Parameters
    ----------
    report : dict
        A report from :func:`build_report` with ``status == "draft"``.
    radiologist : str
        Name of the signing radiologist (1-200 characters after stripping).
    findings, impression : str, optional
        Final wording; the draft's is kept when not given.
    when : str, optional
        ISO 8601 UTC sign-off time (default now).
    reader : dict, optional
        The radiologist's call, ``{"label": str, "finding": bool, "agrees_with_ai": bool | None}``,
        stored as ``reader`` and printed in the text.

    Returns
    -------
    dict
        Copy with ``status = "signed"``, ``signed_by``, ``signed_at``, ``reader`` and new ``text``.

    Raises
    ------
    ReportError
        Already signed, or an empty radiologist name.
    """
    if report.get("status") == "signed":
        raise ReportError(f"report of study {report.get('study_id')} is already signed by {report.get('signed_by')}")
    return _signed_copy(report, radiologist, findings, impression, when, reader)


def amend(
    report: dict,
    radiologist: str,
    findings: str | None = None,
    impression: str | None = None,
    when: str | None = None,
    reader: dict | None = None,
) -> dict:
    """Return an amended copy of a signed report (the signed original is kept by the caller, never overwritten).

    Parameters
    ----------
    report : dict
        A signed report (``status == "signed"``).
    radiologist : str
        Name of the amending radiologist (1-200 characters after stripping).
    findings, impression : str, optional
        New wording; the signed report's is kept when not given.
    when : str, optional
        ISO 8601 UTC time of the amendment (default now).
    reader : dict, optional
        The radiologist's call, as in :func:`sign_off` (default: keep the signed report's).

    Returns
    -------
    dict
        Signed copy with ``amended = True``, the new ``signed_by``/``signed_at`` and ``text``.

    Raises
    ------
    ReportError
        The report is not signed, or an empty radiologist name.
    """
    if report.get("status") != "signed":
        raise ReportError(f"report of study {report.get('study_id')} is not signed: sign it off instead of amending")
    out = _signed_copy(report, radiologist, findings, impression, when, reader or report.get("reader"))
    out["amended"] = True
    out["text"] = report_text(out)
    return out


def _signed_copy(
    report: dict, radiologist: str, findings: str | None, impression: str | None, when: str | None, reader: dict | None
) -> dict:
    name = (radiologist or "").strip()
    if not name or len(name) > 200:
        raise ReportError("radiologist name required (1-200 characters)")
    out = copy.deepcopy(report)
    if findings is not None and findings.strip():
        out["sections"]["findings"] = findings.strip()
    if impression is not None and impression.strip():
        out["sections"]["impression"] = impression.strip()
    if reader is not None:
        out["reader"] = dict(reader)
    out["status"] = "signed"
    out["signed_by"] = name
    out["signed_at"] = when or _now()
    out["text"] = report_text(out)
    return out


def ai_result_line(ai: Mapping[str, Any]) -> str:
    """One model's result as one line of text (label, probabilities, threshold, triage, population warning)."""
    probs = ", ".join(f"{k} {_pct(v)}" for k, v in ai["probabilities"].items())
    thr = f"{_pct(ai['threshold'])} on {ai['positive_class']}" if ai["threshold"] is not None else "most probable class"
    line = (
        f"{ai['model_name']} (version {ai['model_version']}): {ai['label']} ({_pct(ai['probability'])}); "
        f"probabilities: {probs}; threshold: {thr}; triage: {ai['triage']}."
    )
    if ai.get("cam_in_lungs") is not None:
        line += f" Heatmap inside the lung fields: {_pct(ai['cam_in_lungs'])}."
    if not ai.get("applicable", True):
        line += f" WARNING: {ai.get('population_warning')}; shown for information, not used in the triage."
    return line


def report_text(report: dict) -> str:
    """Plain-text rendering of a report (also stored in its ``text`` field)."""
    r = report
    findings = r["sections"]["findings"] or f"[{r.get('findings_placeholder') or 'to be completed by the radiologist'}]"
    lines = [
        r["title"],
        f"Study: {r['study_id']}    Status: {r['status'].upper()}",
        "",
    ]
    if r.get("flag"):
        lines += [r["flag"], ""]
    lines += [
        f"Technique: {r['sections']['technique']}",
        f"Findings: {findings}",
        f"Impression: {r['sections']['impression']}",
        "",
        "AI results:",
    ]
    lines += [f"- {ai_result_line(ai)}" for ai in r["ai_results"]]
    if r.get("heatmap_url"):
        lines.append(f"Heatmap: {r['heatmap_url']}")
    if r.get("reader") and r["reader"].get("label"):
        agrees = r["reader"].get("agrees_with_ai")
        verdict = "" if agrees is None else (" (agrees with the AI)" if agrees else " (disagrees with the AI)")
        lines.append(f"Radiologist's label: {r['reader']['label']}{verdict}.")
    if r["status"] == "signed":
        what = "Amended and signed" if r.get("amended") else "Signed"
        lines.append(f"{what} by {r['signed_by']} at {r['signed_at']}.")
    else:
        lines.append("Not signed: AI draft awaiting radiologist review.")
    lines += ["", r["disclaimer"]]
    return "\n".join(lines)
