"""The worklist order, filters and keyset pages, report versions and the monitoring rows, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from cxrtriage.store import ReportConflictError, worklist_key
from test_store import backend, db_url, make_study, store  # noqa: F401 - fixtures of the store tests


def _fill(store):  # noqa: F811 - the fixture's name
    """12 studies: (priority, flagged, received second, source); ids 1..12."""
    spec = [
        (0.95, True, 10, "upload"),
        (0.30, True, 11, "pacs"),  # flagged by a low-threshold model: above unflagged 0.45
        (0.45, False, 12, "upload"),
        (0.95, True, 5, "stow"),  # same priority as 1, older: first
        (0.10, False, 1, "upload"),
        (0.80, True, 20, "pacs"),
        (0.05, False, 2, "upload"),
        (0.60, True, 3, "upload"),
        (0.20, False, 4, "pacs"),
        (0.99, True, 30, "upload"),
        (0.50, True, 31, "upload"),
        (0.40, False, 32, "stow"),
    ]
    for i, (p, flagged, sec, source) in enumerate(spec, start=1):
        st = make_study(
            i,
            priority=p,
            flag=flagged,
            triage="finding" if flagged else "no_finding",
            source=source,
            received_at=f"2026-11-28T06:00:{sec:02d}.000+00:00",
            model_name="efficientnet_lite0" if i % 2 else "other_model",
        )
        store.insert(st)
    return spec


def _ids(rows):
    return [int(r.id, 16) for r in rows]


def test_worklist_order_filters_and_pages(store):  # noqa: F811
    _fill(store)
    rows, nxt = store.worklist(limit=50)
    assert nxt is None
    # unread first; flagged first; priority descending; oldest first
    assert _ids(rows) == [10, 4, 1, 6, 8, 11, 2, 3, 12, 9, 5, 7]
    assert rows[0].results and rows[0].results[0].model_name == "other_model"
    # a radiologist opens study 10: it moves below every unread study
    assert store.mark_opened(rows[0].id) and not store.mark_opened(rows[0].id)
    rows, _ = store.worklist()
    assert _ids(rows)[-1] == 10 and rows[-1].read_status == "draft"
    assert store.worklist_counts() == {"unread": 11, "unread_flagged": 6, "total": 12}
    # keyset pages of 5: every study once, same order
    seen, cursor = [], None
    while True:
        page, cursor = store.worklist(limit=5, cursor=cursor)
        seen += _ids(page)
        if cursor is None:
            break
    assert seen == _ids(rows)
    # filters
    assert _ids(store.worklist(status="draft")[0]) == [10]
    assert set(_ids(store.worklist(flag=True)[0])) == {1, 2, 4, 6, 8, 10, 11}
    assert set(_ids(store.worklist(flag=False)[0])) == {3, 5, 7, 9, 12}
    assert set(_ids(store.worklist(source="pacs")[0])) == {2, 6, 9}
    assert set(_ids(store.worklist(model="other_model")[0])) == {2, 4, 6, 8, 10, 12}
    assert set(_ids(store.worklist(model="other_model", flag=True)[0])) == {2, 4, 6, 8, 10}
    assert set(_ids(store.worklist(since="2026-11-28T06:00:20", until="2026-11-28T06:00:31")[0])) == {6, 10}
    assert store.worklist(source="nowhere")[0] == []


def test_worklist_key_sorts_like_the_rule():
    a = worklist_key("unread", True, 0.3, "2026-11-28T06:00:00.000+00:00", "a" * 16)
    b = worklist_key("unread", False, 0.9, "2026-11-28T05:00:00.000+00:00", "b" * 16)
    c = worklist_key("signed", True, 1.0, "2026-11-28T04:00:00.000+00:00", "c" * 16)
    d = worklist_key("unread", True, 0.3, "2026-11-28T05:59:59.999+00:00", "d" * 16)
    assert sorted([a, b, c, d]) == [d, a, b, c]
    assert set(a) <= set("0123456789abcdef")  # collation-proof characters
    assert worklist_key("unread", False, None, "2026", "e" * 16) > b  # no priority: last among its rank


def test_sign_amend_and_versions(store):  # noqa: F811
    st = make_study(1)
    store.insert(st)
    signed = {**st.report, "status": "signed", "signed_by": "Dr A (a)", "signed_at": "2026-11-28T07:00:00+00:00"}
    with pytest.raises(ReportConflictError, match="not signed yet"):
        store.sign_report(
            st.id, signed, username="a", reader_label=None, reader_finding=None, reader_agrees=None, amend=True
        )
    out = store.sign_report(
        st.id, signed, username="a", reader_label="no_finding", reader_finding=False, reader_agrees=False, amend=False
    )
    assert out.read_status == "signed" and out.reference_label == "no_finding" and out.reader_agrees is False
    assert out.first_signed_at == "2026-11-28T07:00:00+00:00" and out.report["version"] == 1
    with pytest.raises(ReportConflictError, match="already signed"):
        store.sign_report(
            st.id, signed, username="a", reader_label=None, reader_finding=None, reader_agrees=None, amend=False
        )
    amended = {**signed, "signed_by": "Dr B (b)", "signed_at": "2026-11-28T08:00:00+00:00", "amended": True}
    out = store.sign_report(
        st.id, amended, username="b", reader_label="PNEUMONIA", reader_finding=True, reader_agrees=True, amend=True
    )
    assert out.read_status == "amended" and out.reference_label == "PNEUMONIA" and out.report["version"] == 2
    assert out.first_signed_at == "2026-11-28T07:00:00+00:00" and out.signed_at == "2026-11-28T08:00:00+00:00"
    versions = store.report_versions(st.id)
    assert [(v.version, v.kind, v.username, v.reader_label) for v in versions] == [
        (1, "sign", "a", "no_finding"),
        (2, "amend", "b", "PNEUMONIA"),
    ]
    assert versions[0].report["signed_by"] == "Dr A (a)"  # the first signature is kept as it was
    assert versions[0].ai_label == "finding"
    with pytest.raises(KeyError):
        store.sign_report(
            "f" * 16, signed, username="a", reader_label=None, reader_finding=None, reader_agrees=None, amend=False
        )
    # the monitoring rows: the latest call, with the model results
    (read,) = store.signed_reads()
    assert read["reader_finding"] is True and read["results"][0]["flag"] is True
    assert store.model_scores()["efficientnet_lite0"]["priority"] == [pytest.approx(0.93)]


def test_migration_fills_existing_studies(tmp_path):
    """A database at revision 0003 with a signed and an unsigned study: 0004 gives them status, key and version 1."""
    from alembic import command
    from sqlalchemy import MetaData, Table, column, insert, table

    from cxrtriage.store import Study, StudyStore
    from cxrtriage.store.store import _alembic_config, make_engine, resolve_database_url

    engine = make_engine(resolve_database_url(None, tmp_path))
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), "0003")
    signed, draft = make_study(1, priority=0.9), make_study(2, priority=0.2, flag=False, triage="no_finding")
    signed.report = {
        **signed.report,
        "status": "signed",
        "signed_by": "Dr Old (old)",
        "signed_at": "2026-11-28T09:00:00",
    }
    signed.report_status, signed.signed_by, signed.signed_at = "signed", "Dr Old (old)", "2026-11-28T09:00:00"
    old_columns = {"id", "received_at", "sha256", "model_set", "source", "source_format", "image_file", "width",
                   "height", "triage", "priority", "dicom_meta", "report", "report_status", "signed_by", "signed_at",
                   "timings"}  # fmt: skip
    old_studies = table("studies", *(column(c, Study.__table__.c[c].type) for c in sorted(old_columns)))
    with engine.begin() as conn:
        for st in (signed, draft):
            conn.execute(insert(old_studies), {k: v for k, v in st.to_dict().items() if k in old_columns})
            # the model_results table as it was at 0003 (later revisions add columns)
            old_results = Table("model_results", MetaData(), autoload_with=conn)
            row = {k: v for k, v in st.results[0].to_dict().items() if k != "id" and k in old_results.c}
            conn.execute(insert(old_results), {**row, "study_id": st.id})
    engine.dispose()
    migrated = StudyStore(tmp_path)  # upgrade to head
    try:
        a, b = migrated.get(signed.id), migrated.get(draft.id)
        assert (a.read_status, b.read_status) == ("signed", "unread")
        assert a.first_signed_at == "2026-11-28T09:00:00" and b.first_signed_at is None
        assert b.worklist_key < a.worklist_key  # unread first
        (v,) = migrated.report_versions(signed.id)
        assert (v.version, v.kind, v.signed_by, v.ai_label) == (1, "sign", "Dr Old (old)", "finding")
        assert migrated.report_versions(draft.id) == []
    finally:
        migrated.close()
