"""Worklist at scale: the first page of ``GET /api/v1/worklist`` with 100,000 studies, on SQLite and PostgreSQL.

For each database: a fresh store (Alembic migrations), 100,000 synthetic studies with three model results
each bulk-inserted through SQLAlchemy core (no images: the worklist reads rows only), then the real
``cxr serve`` in a subprocess, a logged-in session (cookie) and timed requests: the default first page,
filtered first pages, the second page by cursor. Also the same query in-process (no HTTP) and the query
plan, to show that the index is used (no full scan, no sort). Target: first page <= 200 ms.

    PYTHONPATH=src python3 benchmarks/worklist_scale.py [--studies 100000] [--repeats 30]

Writes ``benchmarks/results/worklist.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import AUTH, RESULTS, cxr_serve, machine, percentiles  # noqa: E402
from cxrtriage.models.bundle import default_model_dir  # noqa: E402
from cxrtriage.store import ModelResult, Study, StudyStore, model_set_key, worklist_key  # noqa: E402
from cxrtriage.store.testing import PgUnavailableError, throwaway_pg_server  # noqa: E402

#: The model names of the synthetic results (the three shipped models).
MODELS = (
    ("pneumonia-efficientnet_lite0", "pneumonia", ("NORMAL", "PNEUMONIA"), ("NORMAL",), 0.27),
    ("finding-efficientnet_lite0", "finding", ("no_finding", "finding"), ("no_finding",), 0.47),
    ("pneumonia-type-efficientnet_lite0", "pneumonia_type", ("normal", "bacterial", "viral"), ("normal",), None),
)
STATUSES = ("unread", "draft", "signed", "amended")
STATUS_P = (0.25, 0.05, 0.65, 0.05)
SOURCES = ("upload", "pacs", "stow")


def synthetic_rows(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``n`` studies and ``3 n`` model results shaped like served ones (priorities, flags, statuses, times)."""
    rng = np.random.default_rng(seed)
    t0 = _dt.datetime(2026, 6, 1, tzinfo=_dt.UTC)
    offsets = np.sort(rng.uniform(0, 180 * 86400, n))
    status = rng.choice(len(STATUSES), n, p=STATUS_P)
    source = rng.choice(len(SOURCES), n, p=(0.6, 0.35, 0.05))
    model_set = model_set_key([f"{m[0]}-v1" for m in MODELS])
    studies, results = [], []
    for i in range(n):
        sid = f"{i:016x}"
        received = (t0 + _dt.timedelta(seconds=float(offsets[i]))).isoformat(timespec="milliseconds")
        prios, flags = [], []
        for pos, (name, task, classes, normal, thr) in enumerate(MODELS):
            p = float(rng.beta(0.6, 1.4))
            flag = p >= (thr if thr is not None else 0.5)
            probs = dict.fromkeys(classes, (1 - p) / max(1, len(classes) - len(normal)))
            for c in normal:
                probs[c] = 1 - p
            prios.append(p)
            flags.append(flag)
            results.append(
                {
                    "study_id": sid,
                    "position": pos,
                    "model_name": name,
                    "model_version": f"{name}-v1",
                    "task": task,
                    "backend": "onnxruntime",
                    "label": max(probs, key=probs.__getitem__),
                    "probabilities": probs,
                    "threshold": thr,
                    "positive_class": classes[-1],
                    "flag": flag,
                    "priority": p,
                    "applicable": True,
                    "population_warning": None,
                    "heat_class": None,
                    "cam": None,
                    "ood_score": None,
                }
            )
        st = STATUSES[status[i]]
        triage = "finding" if any(flags) else "no_finding"
        prio = max(prios)
        signed = st in ("signed", "amended")
        signed_at = (t0 + _dt.timedelta(seconds=float(offsets[i]) + 3600)).isoformat() if signed else None
        studies.append(
            {
                "id": sid,
                "received_at": received,
                "sha256": f"{i:064x}",
                "model_set": model_set,
                "source": SOURCES[source[i]],
                "source_format": "dicom" if source[i] else "png",
                "image_file": f"images/{i % 256:02x}/{i:064x}.png",
                "width": 2048,
                "height": 2048,
                "triage": triage,
                "priority": prio,
                "dicom_meta": None,
                "report": {"status": "signed" if signed else "draft"},
                "report_status": "signed" if signed else "draft",
                "signed_by": "Dr Bench (bench)" if signed else None,
                "signed_at": signed_at,
                "timings": {},
                "read_status": st,
                "reference_label": None,
                "reader_finding": None,
                "reader_agrees": None,
                "first_signed_at": signed_at,
                "original_file": None,
                "original_offset": None,
                "worklist_key": worklist_key(st, triage == "finding", prio, received, sid),
            }
        )
    return studies, results


def fill(store: StudyStore, n: int, batch: int = 5000) -> float:
    """Bulk-insert ``n`` synthetic studies; seconds taken."""
    studies, results = synthetic_rows(n)
    t = time.perf_counter()
    with store.engine.begin() as conn:
        for k in range(0, n, batch):
            conn.execute(Study.__table__.insert(), studies[k : k + batch])
        for k in range(0, len(results), batch):
            conn.execute(ModelResult.__table__.insert(), results[k : k + batch])
    with store.engine.begin() as conn:  # fresh planner statistics, as autovacuum / ANALYZE would give
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - t


def query_plan(store: StudyStore) -> list[str]:
    """The database's plan of the default first-page query."""
    from sqlalchemy import select

    q = select(Study.id).order_by(Study.worklist_key).limit(51)
    sql = str(q.compile(store.engine, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if store.backend == "sqlite" else "EXPLAIN "
    with store.engine.connect() as conn:
        return [" ".join(str(c) for c in row) for row in conn.exec_driver_sql(prefix + sql)]


def in_process(store: StudyStore, repeats: int) -> dict:
    """Store-level timings of the first page and its counts (no HTTP)."""
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        rows, _ = store.worklist(limit=50)
        store.worklist_counts()
        ms.append((time.perf_counter() - t) * 1e3)
    assert len(rows) == 50
    return percentiles(ms)


def over_http(url: str, repeats: int) -> dict:
    """Timed GETs of the worklist through ``cxr serve`` with a logged-in session."""
    import httpx

    out: dict = {}
    with httpx.Client(base_url=url, timeout=30, headers={"Origin": url}) as c:
        r = c.post("/login", data={"username": AUTH[0], "password": AUTH[1], "next": "/"})
        assert r.status_code in (200, 303), r.text
        first = c.get("/api/v1/worklist").json()
        cursor = first["next_cursor"]
        cases = {
            "first_page": {},
            "first_page_flagged": {"flag": "true"},
            "first_page_unread": {"status": "unread"},
            "first_page_model_flagged": {"model": MODELS[1][0], "flag": "true"},
            "first_page_source_pacs": {"source": "pacs"},
            "second_page_by_cursor": {"cursor": cursor},
        }
        for name, params in cases.items():
            ms = []
            for k in range(repeats + 2):
                t = time.perf_counter()
                resp = c.get("/api/v1/worklist", params=params)
                dt = (time.perf_counter() - t) * 1e3
                assert resp.status_code == 200 and len(resp.json()["items"]) == 50, resp.text[:300]
                if k >= 2:  # two warm-up requests
                    ms.append(dt)
            out[name] = percentiles(ms)
        out["counts"] = first["counts"]
    return out


def run(backend: str, n: int, repeats: int, db_url: str | None, root: Path) -> dict:
    data = root / backend
    store = StudyStore(data, db_url)
    if db_url:  # cxr_serve creates its user in the data folder's SQLite file; the server reads this database
        store.add_user(AUTH[0], AUTH[1], "radiologist")
    fill_s = fill(store, n)
    res: dict = {
        "studies": store.count(),
        "model_results": 3 * n,
        "fill_seconds": round(fill_s, 1),
        "query_plan": query_plan(store),
        "in_process": in_process(store, repeats),
    }
    store.close()
    extra = ("--database-url", db_url) if db_url else ()
    with cxr_serve(default_model_dir(), data, *extra, "--threads", "1") as (url, _):
        res["http"] = over_http(url, repeats)
    res["first_page_p50_ms"] = res["http"]["first_page"]["p50_ms"]
    res["meets_200ms"] = bool(res["http"]["first_page"]["p95_ms"] <= 200)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(RESULTS / "worklist.json"))
    a = ap.parse_args()
    out: dict = {
        "benchmark": "worklist first page with N studies (3 model results each), p50/p95 over repeats",
        "command": f"PYTHONPATH=src python3 benchmarks/worklist_scale.py --studies {a.studies} --repeats {a.repeats}",
        "n_studies": a.studies,
        "target_ms": 200,
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="cxr-worklist-") as tmp:
        root = Path(tmp)
        out["sqlite"] = run("sqlite", a.studies, a.repeats, None, root)
        print("sqlite", json.dumps(out["sqlite"]["http"]["first_page"]), flush=True)
        try:
            with throwaway_pg_server() as pg:
                out["postgresql"] = run("postgresql", a.studies, a.repeats, pg.create_database(), root)
                print("postgresql", json.dumps(out["postgresql"]["http"]["first_page"]), flush=True)
        except PgUnavailableError as exc:
            out["postgresql"] = {"skipped": str(exc)}
    out["summary"] = {
        k: {
            "first_page_p50_ms": v["http"]["first_page"]["p50_ms"],
            "first_page_p95_ms": v["http"]["first_page"]["p95_ms"],
        }
        for k, v in out.items()
        if k in ("sqlite", "postgresql") and "http" in v
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
