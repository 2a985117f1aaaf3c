"""The study store on SQLite (always) and on a real PostgreSQL server (when its binaries are installed).

PostgreSQL: the session's throw-away cluster of ``conftest.pg_server``; one fresh
database per test.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from sqlalchemy import inspect, text

import cxrtriage
from cxrtriage.store import (
    DB_NAME,
    DatabaseURLError,
    ModelResult,
    StoreUnavailableError,
    Study,
    StudyStore,
    model_set_key,
    resolve_database_url,
)
from cxrtriage.store.models import Base


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# per-test stores on both backends


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend, request) -> str | None:
    """None (the SQLite file in the data folder) or the URL of a fresh PostgreSQL database."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_server").create_database()


@pytest.fixture
def store(tmp_path, db_url) -> Iterator[StudyStore]:
    s = StudyStore(tmp_path / "data", db_url)
    yield s
    s.close()


#: Keyword arguments of make_study that belong to the study's (single) model result.
_RESULT_KEYS = {c.key for c in ModelResult.__table__.columns} - {"id", "study_id"}


def make_study(i: int = 0, **kw: Any) -> Study:
    """A complete study as the server stores it (values shaped like real ones), with one model result.

    Keywords naming a :class:`ModelResult` column (``label``, ``model_version``...) set the result's value;
    the study's ``model_set`` follows ``model_version``.
    """
    sid = kw.pop("id", f"{i:016x}")
    result: dict[str, Any] = dict(
        position=0,
        model_name="efficientnet_lite0",
        model_version="pneumonia-v1",
        task="pneumonia",
        backend="onnxruntime",
        label="PNEUMONIA",
        probabilities={"PNEUMONIA": 0.93, "NORMAL": 0.07},
        threshold=0.367,
        positive_class="PNEUMONIA",
        flag=True,
        priority=0.93,
        applicable=True,
        population_warning=None,
        heat_class="PNEUMONIA",
        cam=[[0.0, 0.5], [1.0, 0.25]],
        ood_score=12.5,
    )
    result.update({k: kw.pop(k) for k in list(kw) if k in _RESULT_KEYS})
    report = {
        "study_id": sid,
        "title": "Chest radiograph: AI draft report (pneumonia triage)",
        "status": "draft",
        "sections": {
            "technique": "Single frontal chest radiograph.",
            "findings": "",
            "impression": "Consolidation — suggestive.",
        },
        "ai_results": [
            {"label": "PNEUMONIA", "probability": 0.93, "probabilities": {"PNEUMONIA": 0.93, "NORMAL": 0.07}}
        ],
        "signed_by": None,
        "signed_at": None,
    }
    values: dict[str, Any] = dict(
        id=sid,
        received_at=f"2026-11-28T06:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00",
        sha256=f"{i:064x}",
        model_set=model_set_key([result["model_version"]]),
        source="upload",
        source_format="png",
        image_file=f"images/00/{i:064x}.png",
        width=224,
        height=224,
        triage="finding",
        priority=result["priority"],
        dicom_meta=None,
        report=report,
        report_status="draft",
        signed_by=None,
        signed_at=None,
        timings={"decode_ms": 1.5, "inference_ms": 9.25},
    )
    values.update(kw)
    return Study(**values, results=[ModelResult(**result)])


def _result_values(st: Study) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.to_dict().items() if k not in ("id", "study_id")} for r in st.results]


# ---------------------------------------------------------------------------
# rows


def test_insert_get_find(store):
    st = make_study(1)
    rec, inserted = store.insert(st)
    assert inserted and rec.id == st.id
    got = store.get(st.id)
    assert got is not None and got.to_dict() == make_study(1).to_dict()
    assert _result_values(got) == _result_values(make_study(1)) and got.results[0].study_id == st.id
    assert got.result("efficientnet_lite0") is got.results[0] and got.result("other") is None
    assert store.find(st.sha256, model_set_key(["pneumonia-v1"])).id == st.id
    assert store.find(st.sha256, model_set_key(["another-version"])) is None
    assert store.get("0123456789abcdef") is None
    assert store.ping()


def test_duplicate_insert_returns_existing(store):
    _, inserted = store.insert(make_study(2, id="aaaaaaaaaaaaaaaa"))
    assert inserted
    again, inserted = store.insert(make_study(2, id="bbbbbbbbbbbbbbbb", label="NORMAL"))
    assert not inserted and again.id == "aaaaaaaaaaaaaaaa" and again.results[0].label == "PNEUMONIA"
    assert store.count() == 1 and store.get("bbbbbbbbbbbbbbbb") is None
    # same upload, other model version: a new study
    _, inserted = store.insert(make_study(2, id="cccccccccccccccc", model_version="pneumonia-v2"))
    assert inserted and store.count() == 2


def test_duplicate_insert_race_between_threads(store):
    """Eight threads store the same upload at once: one insert wins, all get the winner."""
    barrier = threading.Barrier(8)
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        st = make_study(3, id=f"{k:016x}")
        barrier.wait()
        rec, inserted = store.insert(st)
        with lock:
            results.append((rec.id, inserted))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8
    assert sum(ins for _, ins in results) == 1
    assert len({sid for sid, _ in results}) == 1
    assert store.count() == 1


def test_update_report(store):
    st = make_study(4)
    store.insert(st)
    report = dict(st.report, status="signed", signed_by="Dr Test", signed_at="2026-11-28T07:00:00.000+00:00")
    report["sections"] = dict(report["sections"], findings="Right lower lobe consolidation.")
    store.update_report(st.id, report)
    got = store.get(st.id)
    assert got.report == report and got.report_status == "signed"
    assert got.signed_by == "Dr Test" and got.signed_at == "2026-11-28T07:00:00.000+00:00"
    with pytest.raises(KeyError):
        store.update_report("ffffffffffffffff", report)


def test_recent_order_and_count(store):
    assert store.count() == 0 and store.recent() == []
    for i in (5, 1, 9, 3, 7):
        store.insert(make_study(i))
    assert store.count() == 5
    assert [r.id for r in store.recent(3)] == [f"{i:016x}" for i in (9, 7, 5)]
    assert [r.id for r in store.recent(3, offset=3)] == [f"{i:016x}" for i in (3, 1)]
    # same received_at: ties broken by id
    store.insert(make_study(20, id="ffffffffffffff00", received_at="2030-01-01T00:00:00.000+00:00"))
    store.insert(make_study(21, id="0000000000000f00", received_at="2030-01-01T00:00:00.000+00:00"))
    assert [r.id for r in store.recent(2)] == ["0000000000000f00", "ffffffffffffff00"]


def test_json_round_trip(store):
    probs = {"PNEUMONIA": 0.1 + 0.2, "NORMAL": 1 - (0.1 + 0.2), "COVID": 1e-300}  # key order not alphabetical
    cam = np.round(np.random.default_rng(0).random((7, 7)), 4).tolist()
    dicom = {"Modality": "DX", "PhotometricInterpretation": "MONOCHROME1", "Rows": 2048, "PixelSpacing": [0.139, 0.139]}
    st = make_study(
        6,
        probabilities=probs,
        cam=cam,
        dicom_meta=dicom,
        ood_score=None,
        threshold=None,
        report=dict(make_study(6).report, text="Impression — «café» ✓\nline two", nested={"a": [1, None, True]}),
    )
    store.insert(st)
    got = store.get(st.id)
    res = got.results[0]
    assert res.probabilities == probs and list(res.probabilities) == list(probs)
    assert res.cam == cam and got.dicom_meta == dicom
    assert got.report["text"] == "Impression — «café» ✓\nline two" and got.report["nested"] == {"a": [1, None, True]}
    assert res.ood_score is None and res.threshold is None
    plain = make_study(7, cam=None)  # no CAM, no DICOM: SQL NULL, not JSON 'null'
    store.insert(plain)
    with store.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT r.cam IS NULL, s.dicom_meta IS NULL FROM studies s JOIN model_results r ON r.study_id = s.id "
                "WHERE s.id = :id"
            ),
            {"id": plain.id},
        ).one()
    assert tuple(bool(v) for v in row) == (True, True)
    assert store.get(plain.id).results[0].cam is None


# ---------------------------------------------------------------------------
# schema and migrations


def test_migrations_create_schema_and_are_idempotent(tmp_path, db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from cxrtriage.store.store import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()

    s = StudyStore(tmp_path / "d", db_url)
    assert s.revision == head
    with s.engine.connect() as conn:
        insp = inspect(conn)
        assert {"studies", "alembic_version"} <= set(insp.get_table_names())
        assert "studies_received" in {ix["name"] for ix in insp.get_indexes("studies")}
        # the migrations make exactly the schema the mapped class declares
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    s.insert(make_study(8))
    s.close()
    # restart: upgrade again is a no-op and keeps the data
    s2 = StudyStore(tmp_path / "d", db_url)
    assert s2.revision == head and s2.count() == 1 and s2.get(f"{8:016x}") is not None
    with s2.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar() == 1
    s2.close()


def test_replicas_starting_together_migrate_once(tmp_path, db_url):
    """Four stores opening a fresh database at the same moment: one migrates, all end at head."""
    barrier = threading.Barrier(4)
    stores: list[StudyStore] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def open_store() -> None:
        barrier.wait()
        try:
            s = StudyStore(tmp_path / "d", db_url)
        except BaseException as exc:  # collected, asserted below
            with lock:
                errors.append(exc)
            return
        with lock:
            stores.append(s)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(stores) == 4
        assert len({s.revision for s in stores}) == 1
        stores[0].insert(make_study(11))
        assert all(s.count() == 1 for s in stores)
    finally:
        for s in stores:
            s.close()


_LEGACY_DDL = """
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, received_at TEXT NOT NULL, sha256 TEXT NOT NULL, source_format TEXT NOT NULL,
    image_file TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, label TEXT NOT NULL,
    probabilities TEXT NOT NULL, threshold REAL, positive_class TEXT, triage TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, backend TEXT NOT NULL, heat_class TEXT,
    cam TEXT, ood_score REAL, dicom_meta TEXT, report TEXT NOT NULL, report_status TEXT NOT NULL,
    signed_by TEXT, signed_at TEXT, timings TEXT NOT NULL, UNIQUE (sha256, model_version)
);
CREATE INDEX IF NOT EXISTS studies_received ON studies (received_at);
"""


def test_legacy_sqlite_database_is_adopted(tmp_path):
    """A data folder written by the hand-written sqlite3 store (before migrations) opens with its studies."""
    d = tmp_path / "old"
    d.mkdir()
    con = sqlite3.connect(d / DB_NAME)
    con.executescript(_LEGACY_DDL)
    con.execute(
        "INSERT INTO studies VALUES ('00000000000000aa','2026-01-01T00:00:00.000+00:00','ab','png','images/ab/ab.png',"
        "10,20,'NORMAL','{\"NORMAL\":0.9,\"PNEUMONIA\":0.1}',0.5,'PNEUMONIA','no_finding','m','v1','torch',NULL,NULL,NULL,NULL,"
        "'{\"status\":\"draft\"}','draft',NULL,NULL,'{\"total_ms\":3.0}')"
    )
    con.commit()
    con.close()
    s = StudyStore(d)
    assert s.revision
    got = s.get("00000000000000aa")
    res = got.results[0]
    assert (
        res.probabilities == {"NORMAL": 0.9, "PNEUMONIA": 0.1} and res.cam is None and got.report == {"status": "draft"}
    )
    assert res.model_version == "v1" and not res.flag and res.priority == pytest.approx(0.1) and res.applicable
    rec, inserted = s.insert(make_study(9, sha256="ab", model_version="v1"))
    assert not inserted and rec.id == "00000000000000aa"
    s.close()


def test_upgrade_from_0002_moves_the_model_columns(tmp_path, db_url):
    """A database at revision 0002 with a study: 0003 moves its per-model columns into model_results."""
    from alembic import command

    from cxrtriage.store.store import _alembic_config, make_engine

    url = resolve_database_url(db_url, tmp_path / "d")
    engine = make_engine(url)
    report = {
        "study_id": "00000000000000aa",
        "title": "t",
        "task": "pneumonia",
        "status": "draft",
        "flag": "ABNORMAL: pneumonia",
        "heatmap_url": "/api/v1/studies/00000000000000aa/heatmap.png",
        "ai_result": {
            "label": "PNEUMONIA",
            "probability": 0.8,
            "probabilities": {"NORMAL": 0.2, "PNEUMONIA": 0.8},
            "threshold": 0.3,
            "positive_class": "PNEUMONIA",
            "triage": "finding",
        },
        "model": {"name": "m", "version": "v2"},
    }
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "0002")
            conn.execute(
                text(
                    "INSERT INTO studies (id, received_at, sha256, source_format, image_file, width, height, label, "
                    "probabilities, threshold, positive_class, triage, model_name, model_version, backend, heat_class, "
                    "cam, ood_score, dicom_meta, report, report_status, signed_by, signed_at, timings) VALUES "
                    "('00000000000000aa', '2026-01-01T00:00:00.000+00:00', 'ab', 'png', 'images/ab/ab.png', 10, 20, "
                    "'PNEUMONIA', :probs, 0.3, 'PNEUMONIA', 'finding', 'm', 'v2', 'onnxruntime', 'PNEUMONIA', :cam, "
                    "7.5, NULL, :report, 'draft', NULL, NULL, '{\"total_ms\": 3.0}')"
                ),
                {
                    "probs": '{"NORMAL": 0.2, "PNEUMONIA": 0.8}',
                    "cam": "[[0.0, 1.0]]",
                    "report": __import__("json").dumps(report),
                },
            )
    finally:
        engine.dispose()
    s = StudyStore(tmp_path / "d", db_url)
    try:
        got = s.get("00000000000000aa")
        assert got is not None and got.model_set == model_set_key(["v2"]) and got.source == "upload"
        assert got.triage == "finding" and got.priority == pytest.approx(0.8)
        (res,) = got.results
        assert (res.model_name, res.model_version, res.task, res.backend, res.label) == (
            "m",
            "v2",
            "pneumonia",
            "onnxruntime",
            "PNEUMONIA",
        )
        assert res.probabilities == {"NORMAL": 0.2, "PNEUMONIA": 0.8} and res.threshold == pytest.approx(0.3)
        assert res.flag and res.applicable and res.population_warning is None
        assert res.cam == [[0.0, 1.0]] and res.ood_score == pytest.approx(7.5) and res.heat_class == "PNEUMONIA"
        assert "ai_result" not in got.report and got.report["ai_results"][0]["model_name"] == "m"
        assert got.report["flagged_by"] == ["m"]
        with s.engine.connect() as conn:
            cols = {c["name"] for c in inspect(conn).get_columns("studies")}
        assert not cols & {"label", "probabilities", "model_version", "cam"}
        # the same image analysed by the same model version is still the same study
        _, inserted = s.insert(make_study(9, sha256="ab", model_version="v2"))
        assert not inserted
    finally:
        s.close()


def test_sqlite_pragmas(tmp_path):
    s = StudyStore(tmp_path / "d")
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    assert s.db_path == tmp_path / "d" / DB_NAME and s.backend == "sqlite"
    s.close()


def test_images_on_disk(tmp_path):
    s = StudyStore(tmp_path / "d")
    img = np.random.default_rng(1).integers(0, 256, (30, 40), dtype=np.uint8)
    rel = s.save_image("ab" * 32, img)
    assert rel == f"images/ab/{'ab' * 32}.png" and (tmp_path / "d" / rel).is_file()
    assert np.array_equal(s.load_image(rel), img)
    assert s.save_image("ab" * 32, img) == rel  # stored once
    p = s.write_derived("00000000000000aa", "heatmap", b"\x89PNG fake")
    assert p == s.derived_path("00000000000000aa", "heatmap") and p.read_bytes() == b"\x89PNG fake"
    s.close()


# ---------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    "url,message",
    [
        ("not a url", "is not a URL"),
        ("mysql://user@host/db", "unsupported database 'mysql'"),
        ("sqlite://", "in-memory SQLite"),
        ("sqlite:///:memory:", "in-memory SQLite"),
        ("postgresql://user:secret@host:5432", "names no database"),
        ("postgresql+nosuchdriver://user@host/db", "driver"),
    ],
)
def test_bad_database_urls(tmp_path, url, message):
    with pytest.raises(DatabaseURLError, match=message) as exc:
        StudyStore(tmp_path / "d", url)
    assert "secret" not in str(exc.value)


def test_url_defaults(tmp_path):
    assert resolve_database_url(None, tmp_path).database == str(tmp_path / DB_NAME)
    assert resolve_database_url("", tmp_path).get_backend_name() == "sqlite"
    assert resolve_database_url("postgresql://u@h:5/db", tmp_path).drivername == "postgresql+psycopg"
    assert resolve_database_url(f"sqlite:///{tmp_path}/x.db", tmp_path).database == f"{tmp_path}/x.db"


def test_unreachable_postgresql_is_a_clear_error(tmp_path):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://cxr@127.0.0.1:{_free_port()}/nothing?connect_timeout=3"
    with pytest.raises(StoreUnavailableError, match="cannot open or migrate"):
        StudyStore(tmp_path / "d", url)


def test_cli_rejects_bad_database_url(tmp_path, capsys):
    pytest.importorskip("uvicorn")
    from cxrtriage.cli import main

    assert main(["serve", "--data-dir", str(tmp_path), "--database-url", "mysql://u@h/db"]) == 2
    assert "unsupported database 'mysql'" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# no lost study after SIGKILL

_CHILD = r"""
import sys
from cxrtriage.store import ModelResult, Study, StudyStore

store = StudyStore(sys.argv[1], sys.argv[2] or None)
print("ready", flush=True)
i = 0
while True:
    sid = f"{i:016x}"
    rec, inserted = store.insert(Study(
        id=sid, received_at=f"2026-11-28T00:00:00.{i:06d}+00:00", sha256=f"{i:064x}", model_set="k",
        source_format="png", image_file="images/x.png", width=1, height=1, triage="no_finding", priority=0.0,
        dicom_meta=None, report={"status": "draft", "n": i}, report_status="draft", signed_by=None,
        signed_at=None, timings={"total_ms": 1.0},
        results=[ModelResult(
            position=0, model_name="m", model_version="v", task="pneumonia", backend="torch", label="NORMAL",
            probabilities={"NORMAL": 1.0}, threshold=None, positive_class=None, flag=False, priority=0.0,
            applicable=True, population_warning=None, heat_class=None, cam=[[float(i)]], ood_score=None,
        )],
    ))
    assert inserted
    print(sid, flush=True)  # reported as committed only after insert() returned
    i += 1
"""


def test_no_lost_study_after_sigkill(tmp_path, db_url):
    """A writer killed mid-run (SIGKILL) loses none of the studies it reported as stored."""
    data = tmp_path / "data"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(Path(cxrtriage.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data), db_url or ""],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    reported: list[str] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        while len(reported) < 150:
            line = proc.stdout.readline()
            if not line:
                break
            reported.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # while it keeps inserting
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err
    reported += [ln for ln in out.split("\n")[:-1] if ln]  # complete lines only
    assert len(reported) >= 150
    s = StudyStore(data, db_url)
    try:
        missing = [sid for sid in reported if s.get(sid) is None]
        assert missing == []
        assert s.count() >= len(reported)
        got = s.get(reported[-1])
        assert got.report["n"] == int(reported[-1], 16) and got.results[0].cam == [[float(int(reported[-1], 16))]]
        _, inserted = s.insert(make_study(10**6))  # still writable after the kill
        assert inserted
    finally:
        s.close()
