"""Structured draft radiology reports from a model prediction.

One JSON template per task (``report/templates/<task>.json``, fallback
``default.json``) holds the wording: a pre-filled normal report for negative
studies, and for positive studies an ``abnormal`` flag naming the predicted
class and its probability, the heatmap reference and an empty findings field
left for the radiologist. Every report starts with ``status = "draft"`` and
carries :data:`cxrtriage.DISCLAIMER`; it becomes ``"signed"`` only through
:func:`sign_off` (who and when are recorded).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from functools import cache
from importlib import resources

from cxrtriage import DISCLAIMER

__all__ = ["build_report", "sign_off", "amend", "report_text", "load_template", "ReportError"]


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


def build_report(
    *,
    task: str,
    label: str,
    probabilities: dict[str, float],
    threshold: float | None,
    positive_class: str,
    triage: str,
    model_name: str,
    model_version: str,
    study_id: str,
    heatmap_url: str | None = None,
    created_at: str | None = None,
) -> dict:
    """Fill the task's template for one prediction.

    Parameters
    ----------
    task : str
        Task name (selects the template).
    label : str
        Predicted class.
    probabilities : dict str -> float
        Class probabilities in [0, 1].
    threshold : float or None
        Decision threshold on ``positive_class`` (binary tasks), else None.
    positive_class : str
    triage : {"no_finding", "finding"}
        ``finding`` makes the report abnormal.
    model_name, model_version : str
    study_id : str
    heatmap_url : str, optional
        Attached to abnormal reports.
    created_at : str, optional
        ISO 8601 UTC time; default now.

    Returns
    -------
    dict
        JSON-serialisable report: ``status`` ("draft"), ``abnormal`` (bool),
        ``flag``, ``sections`` (technique, findings, impression),
        ``findings_placeholder``, ``ai_result``, ``model``, ``heatmap_url``,
        ``signed_by``/``signed_at`` (None), ``disclaimer`` and ``text``.
    """
    t = load_template(task)
    abnormal = triage == "finding"
    prob = float(probabilities.get(label, 0.0))
    values = {
        "label": label,
        "label_text": t.get("label_text", {}).get(label, label),
        "probability_pct": _pct(prob),
        "threshold_pct": _pct(threshold) if threshold is not None else "argmax",
    }
    part = t["abnormal"] if abnormal else t["normal"]
    report = {
        "study_id": study_id,
        "title": t["title"],
        "task": task,
        "status": "draft",
        "abnormal": abnormal,
        "flag": part["flag"].format(**values) if abnormal else None,
        "sections": {
            "technique": t["technique"],
            "findings": part["findings"].format(**values),
            "impression": part["impression"].format(**values),
        },
        "findings_placeholder": part.get("findings_placeholder", ""),
        "ai_result": {
            "label": label,
            "probability": prob,
            "probabilities": {k: float(v) for k, v in probabilities.items()},
            "threshold": threshold,
            "positive_class": positive_class,
            "triage": triage,
        },
        "model": {"name": model_name, "version": model_version},
        "heatmap_url": heatmap_url if abnormal else None,
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


def report_text(report: dict) -> str:
    """Plain-text rendering of a report (also stored in its ``text`` field)."""
    r = report
    ai = r["ai_result"]
    probs = ", ".join(f"{k} {_pct(v)}" for k, v in ai["probabilities"].items())
    thr = f"{_pct(ai['threshold'])} on {ai['positive_class']}" if ai["threshold"] is not None else "most probable class"
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
        f"AI result: {ai['label']} ({_pct(ai['probability'])}); probabilities: {probs}; threshold: {thr}; triage: {ai['triage']}.",
        f"Model: {r['model']['name']} version {r['model']['version']}.",
    ]
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
