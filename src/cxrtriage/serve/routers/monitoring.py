"""Monitoring after deployment: each model against the radiologists' signed reads, score drift, refusals,
out-of-population rates and turnaround; as a page (``/monitoring``), JSON, CSV and PNG plots.

The numbers come from :mod:`cxrtriage.metrics.agreement` and :mod:`cxrtriage.metrics.drift` (pure); this
module only gathers the store's rows into arrays and renders the results.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
from enum import StrEnum
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from cxrtriage.metrics.agreement import Agreement, agreement, agreement_over_time, turnaround
from cxrtriage.metrics.drift import DriftResult, drift
from cxrtriage.metrics.report import format_estimate
from cxrtriage.serve.deps import get_service, render_page
from cxrtriage.serve.schemas import ErrorOut
from cxrtriage.serve.security import Principal, audit, page_principal, require_full
from cxrtriage.serve.service import ApiError, StudyService

router = APIRouter(tags=["monitoring"])

#: Bootstrap replicates of the overall intervals (per period: :data:`N_BOOT_PERIOD`).
N_BOOT = 1000
N_BOOT_PERIOD = 200

#: Default window of the monitoring page, days.
DEFAULT_DAYS = 90


def _utc(ts: str) -> _dt.datetime:
    """An ISO 8601 time; one without a zone (written by older versions) is UTC."""
    t = _dt.datetime.fromisoformat(ts)
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)


def _minutes(start: str, end: str) -> float:
    return (_utc(end) - _utc(start)).total_seconds() / 60.0


def _week(ts: str) -> str:
    y, w, _ = _utc(ts).isocalendar()
    return f"{y}-W{w:02d}"


def _since(days: int) -> str:
    return (_dt.datetime.now(_dt.UTC) - _dt.timedelta(days=days)).isoformat(timespec="milliseconds")


class Monitoring:
    """The monitoring figures of one window, computed once per request.

    Parameters
    ----------
    service : StudyService
    days : int
        Window: studies received / reads signed in the last ``days`` days.
    """

    def __init__(self, service: StudyService, days: int) -> None:
        store = service.store
        self.days = days
        since = _since(days)
        self.reads = store.signed_reads(since)
        scores = store.model_scores(since)
        refs = service.score_references()
        names = list(dict.fromkeys([*refs, *scores, *(r["model_name"] for x in self.reads for r in x["results"])]))
        self.agreement: dict[str, Agreement] = {}
        self.over_time: dict[str, list[tuple[str, Agreement]]] = {}
        self.drift: dict[str, DriftResult] = {}
        self.out_of_population: dict[str, dict[str, Any]] = {}
        for name in names:
            rows = [(x, r) for x in self.reads for r in x["results"] if r["model_name"] == name]
            truth = np.array([x["reader_finding"] for x, _ in rows], dtype=bool)
            flags = np.array([r["flag"] for _, r in rows], dtype=bool)
            self.agreement[name] = agreement(truth, flags, n_boot=N_BOOT)
            self.over_time[name] = agreement_over_time(
                [_week(x["signed_at"]) for x, _ in rows], truth, flags, n_boot=N_BOOT_PERIOD
            )
            sc = scores.get(name, {"priority": [], "applicable": []})
            applicable = np.array(sc["applicable"], dtype=bool)
            ref = refs.get(name)
            if ref:
                current = np.clip(np.array(sc["priority"], dtype=np.float64)[applicable], 0.0, 1.0)
                self.drift[name] = drift(ref, current)
            n = int(applicable.size)
            self.out_of_population[name] = {"n": n, "rate": float((~applicable).mean()) if n else None}
        counts = store.audit_counts(("upload", "upload_refused"), since)
        uploads = sum(v for (a, _), v in counts.items() if a == "upload")
        refused = {d: v for (a, d), v in counts.items() if a == "upload_refused"}
        total = uploads + sum(refused.values())
        self.refusals: dict[str, Any] = {
            "uploads": uploads,
            "refused": sum(refused.values()),
            "rate": sum(refused.values()) / total if total else None,
            "by_reason": dict(sorted(refused.items(), key=lambda kv: -kv[1])),
            "outside_population": sum(v for d, v in refused.items() if "outside_population" in d),
        }
        minutes = [_minutes(x["received_at"], x["first_signed_at"]) for x in self.reads]
        flagged = [x["triage"] == "finding" for x in self.reads]
        self.turnaround = turnaround(np.maximum(np.array(minutes, dtype=np.float64), 0.0), flagged, n_boot=N_BOOT)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``dict`` (the ``/api/v1/monitoring`` answer)."""
        return {
            "window_days": self.days,
            "n_signed_reads": len(self.reads),
            "models": [
                {
                    "model_name": name,
                    "agreement": a.to_dict(),
                    "over_time": [{"period": p, **g.to_dict()} for p, g in self.over_time[name]],
                    "drift": None if name not in self.drift else {k: v for k, v in vars(self.drift[name]).items()},
                    "out_of_population": self.out_of_population[name],
                }
                for name, a in self.agreement.items()
            ],
            "refusals": self.refusals,
            "turnaround_minutes": {k: v.to_dict() for k, v in self.turnaround.items()},
            "reference_standard": "the signing radiologist's label (finding / no finding), latest report version",
        }

    def csv(self) -> str:
        """One row per model, period (``all`` = the whole window) and metric: value, 95 % CI, n."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["model", "period", "metric", "value", "ci95_low", "ci95_high", "n"])
        for name, a in self.agreement.items():
            for period, g in [("all", a), *self.over_time[name]]:
                for metric, est in g.metrics.items():
                    lo, hi = est.ci95 if est.ci95 else ("", "")
                    w.writerow([name, period, metric, "" if est.value is None else est.value, lo, hi, g.n])
            d = self.drift.get(name)
            if d is not None:
                w.writerow([name, "all", "psi", "" if d.psi is None else d.psi, "", "", d.n_current])
                w.writerow([name, "all", "ks", "" if d.ks is None else d.ks, "", "", d.n_current])
            oop = self.out_of_population[name]
            w.writerow(
                [name, "all", "out_of_population_rate", "" if oop["rate"] is None else oop["rate"], "", "", oop["n"]]
            )
        for group, t in self.turnaround.items():
            lo, hi = t.median.ci95 if t.median.ci95 else ("", "")
            med = "" if t.median.value is None else t.median.value
            w.writerow(["all", "all", f"turnaround_median_minutes_{group}", med, lo, hi, t.n])
        r = self.refusals
        w.writerow(
            ["all", "all", "refusal_rate", "" if r["rate"] is None else r["rate"], "", "", r["uploads"] + r["refused"]]
        )
        return buf.getvalue()


class Plot(StrEnum):
    agreement = "agreement"
    drift = "drift"
    turnaround = "turnaround"


_DAYS = Query(DEFAULT_DAYS, ge=1, le=3650, description="window: the last this many days")
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    403: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get("/api/v1/monitoring", responses=_ERRORS, summary="Models against signed reads, drift, refusals, turnaround")
def monitoring_api(
    request: Request,
    days: int = _DAYS,
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> dict:
    audit(request, principal, "list", detail=f"monitoring {days} d")
    return Monitoring(service, days).to_dict()


@router.get(
    "/api/v1/monitoring.csv",
    responses={200: {"content": {"text/csv": {}}, "description": "CSV"}, **_ERRORS},
    response_class=Response,
    summary="The monitoring figures as CSV",
)
def monitoring_csv(
    request: Request,
    days: int = _DAYS,
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> Response:
    audit(request, principal, "list", detail=f"monitoring.csv {days} d")
    return Response(
        Monitoring(service, days).csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="cxrtriage-monitoring.csv"', "Cache-Control": "no-store"},
    )


@router.get(
    "/api/v1/monitoring/{plot}.png",
    responses={200: {"content": {"image/png": {}}, "description": "PNG"}, **_ERRORS},
    response_class=Response,
    summary="Monitoring plot: agreement over time, score drift or turnaround",
)
def monitoring_plot(
    request: Request,
    plot: Plot,
    days: int = _DAYS,
    principal: Principal = Depends(require_full),
    service: StudyService = Depends(get_service),
) -> Response:
    from cxrtriage.cards.monitoring_plots import agreement_figure, drift_figure, turnaround_figure

    m = Monitoring(service, days)
    if plot is Plot.agreement:
        png = agreement_figure(m.over_time)
    elif plot is Plot.drift:
        png = drift_figure(m.drift)
    else:
        png = turnaround_figure(m.turnaround)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/monitoring", response_class=HTMLResponse, include_in_schema=False)
def monitoring_page(
    request: Request,
    days: int = Query(DEFAULT_DAYS, ge=1, le=3650),
    principal: Principal = Depends(page_principal),
    service: StudyService = Depends(get_service),
) -> HTMLResponse:
    if principal.scope != "full":
        return render_page(request, "error.html", 403, error=ApiError(403, "forbidden", "upload-only session"))
    audit(request, principal, "list", detail=f"monitoring page {days} d")
    m = Monitoring(service, days)
    return render_page(request, "monitoring.html", user=principal, m=m, days=days, fmt=format_estimate)
