"""Structured draft reports: template per task; JSON, HTML and PDF output; radiologist sign-off."""

from cxrtriage.report.draft import ReportError, build_report, load_template, report_text, sign_off
from cxrtriage.report.render import render_html, render_json, render_pdf

__all__ = [
    "ReportError",
    "build_report",
    "load_template",
    "render_html",
    "render_json",
    "render_pdf",
    "report_text",
    "sign_off",
]
