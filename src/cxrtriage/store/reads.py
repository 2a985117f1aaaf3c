"""Reads of the study store: worklist order, report versions (sign-off and amendments), notification outbox.

Mixed into :class:`cxrtriage.store.store.StudyStore` (:class:`ReadsMixin`); every method opens its own
short session, like the rest of the store.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only, selectinload

from cxrtriage.store.models import AuditEvent, ModelResult, Notification, ReportVersion, Study
from cxrtriage.store.users import utc_now

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["ReadsMixin", "ReportConflictError", "worklist_key", "PRIORITY_DIGITS"]

#: Digits of the priority part of the worklist key (resolution 1e-6).
PRIORITY_DIGITS = 7
_NO_PRIORITY = "9" * PRIORITY_DIGITS


class ReportConflictError(Exception):
    """A sign-off that conflicts with the report's state (signing a signed report, amending a draft, a race)."""


def worklist_key(read_status: str, flagged: bool, priority: float | None, received_at: str, study_id: str) -> str:
    """Sort key of the worklist: unread first, then AI-flagged first, then AI priority descending, then oldest first.

    The flag comes before the priority because the models' thresholds differ: a study one model flags at
    P(finding) = 0.3 goes above an unflagged one another model scores 0.45.

    Only digits and lower-case hex of fixed widths, so that byte order, SQLite's ``BINARY`` and any
    PostgreSQL collation sort it alike; one indexed column serves the default order and keyset
    pagination (``worklist_key > :cursor``).

    Parameters
    ----------
    read_status : {"unread", "draft", "signed", "amended"}
    flagged : bool
        The study's combined triage is ``finding``.
    priority : float or None
        Calibrated probability of a finding in [0, 1] (clipped); None (no applicable model) sorts last.
    received_at : str
        ISO 8601 UTC time, ``YYYY-MM-DDTHH:MM:SS.mmm+00:00``.
    study_id : str
        16 hex characters.

    Returns
    -------
    str
        ``2 + 7 + 17 + len(study_id)`` characters: status rank (0 unread), flag rank (0 flagged),
        ``round((1 - priority) * 1e6)`` zero-padded, the received time's digits (to milliseconds), the id.
    """
    rank = ("0" if read_status == "unread" else "1") + ("0" if flagged else "1")
    if priority is None or priority != priority:  # None or NaN
        prio = _NO_PRIORITY
    else:
        p = min(1.0, max(0.0, float(priority)))
        prio = f"{round((1.0 - p) * 10 ** (PRIORITY_DIGITS - 1)):0{PRIORITY_DIGITS}d}"
    digits = re.sub(r"\D", "", received_at[:23])[:17].ljust(17, "0")
    return f"{rank}{prio}{digits}{study_id.lower()}"


def _key_of(study: Study) -> str:
    return worklist_key(
        study.read_status or "unread", study.triage == "finding", study.priority, study.received_at, study.id
    )


@event.listens_for(Study, "before_insert")
def _set_worklist_key(_mapper: Any, _conn: Any, study: Study) -> None:
    """Every inserted study gets its status and sort key."""
    if not study.read_status:
        study.read_status = "unread"
    study.worklist_key = _key_of(study)


#: Columns a worklist row shows (the rest, e.g. the report JSON, is not read).
_WORKLIST_STUDY_COLUMNS = (
    Study.id,
    Study.received_at,
    Study.source,
    Study.source_format,
    Study.priority,
    Study.triage,
    Study.read_status,
    Study.reference_label,
    Study.signed_at,
    Study.worklist_key,
)
_WORKLIST_RESULT_COLUMNS = (
    ModelResult.study_id,
    ModelResult.position,
    ModelResult.model_name,
    ModelResult.label,
    ModelResult.flag,
    ModelResult.priority,
    ModelResult.applicable,
)


class ReadsMixin:
    """Store methods of the worklist, the report versions, the original pixels and the notification outbox."""

    _sessions: sessionmaker[Session]
    root: Path

    # -- original pixels ----------------------------------------------------
    def save_original(self, sha256: str, pixels: np.ndarray) -> str:
        """Store the original 16-bit pixels of a DICOM upload as a 16-bit grayscale PNG, atomically.

        Parameters
        ----------
        sha256 : str
            The study's pixel hash (names the file).
        pixels : numpy.ndarray
            ``uint16 (H, W)``.

        Returns
        -------
        str
            Path relative to the data folder, ``images/ab/<sha256>-16.png``.
        """
        from PIL import Image

        rel = f"images/{sha256[:2]}/{sha256}-16.png"
        dst = self.root / rel
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint16)).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, dst)
        return rel

    def load_original(self, rel: str) -> np.ndarray:
        """``uint16 (H, W)`` pixels of a file from :meth:`save_original` (FileNotFoundError when missing)."""
        from PIL import Image

        with Image.open(self.root / rel) as im:
            return np.asarray(im).astype(np.uint16)

    # -- worklist status --------------------------------------------------
    def mark_opened(self, study_id: str) -> bool:
        """A radiologist opened the study: ``unread`` becomes ``draft`` (and its sort key follows).

        Returns
        -------
        bool
            True when the status changed.
        """
        with self._sessions() as s:
            st = s.get(Study, study_id)
            if st is None or st.read_status != "unread":
                return False
            st.read_status = "draft"
            st.worklist_key = _key_of(st)
            s.commit()
            return True

    def worklist(
        self,
        *,
        status: str | None = None,
        flag: bool | None = None,
        model: str | None = None,
        source: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Study], str | None]:
        """One page of the worklist: unread first, then AI priority descending, then oldest first.

        Keyset pagination on the indexed ``worklist_key`` (no OFFSET): the first page of 100,000 studies
        reads ``limit + 1`` index entries.

        Parameters
        ----------
        status : {"unread", "draft", "signed", "amended"}, optional
        flag : bool, optional
            Only studies the AI flagged (True) or did not flag (False); with ``model``, that model's flag.
        model : str, optional
            Only studies this model analysed (:attr:`ModelResult.model_name`).
        source : {"upload", "pacs", "stow"}, optional
        since, until : str, optional
            ISO 8601 dates or times (UTC): received at or after ``since``, before ``until``.
        cursor : str, optional
            ``next_cursor`` of the previous page.
        limit : int
            Studies per page (1-500).

        Returns
        -------
        (studies, next_cursor)
            Studies with the worklist's columns and their results' model name, label, flag, priority and
            applicability loaded (nothing else: no report, no CAM); ``next_cursor`` None on the last page.
        """
        limit = max(1, min(500, int(limit)))
        q = (
            select(Study)
            .options(
                load_only(*_WORKLIST_STUDY_COLUMNS),
                selectinload(Study.results).load_only(*_WORKLIST_RESULT_COLUMNS),
            )
            .order_by(Study.worklist_key)
            .limit(limit + 1)
        )
        if status is not None:
            q = q.where(Study.read_status == status)
        if model is not None:
            sub = select(ModelResult.id).where(ModelResult.study_id == Study.id, ModelResult.model_name == model)
            if flag is not None:
                sub = sub.where(ModelResult.flag.is_(flag))
            q = q.where(sub.exists())
        elif flag is not None:
            q = q.where(Study.triage == "finding") if flag else q.where(Study.triage != "finding")
        if source is not None:
            q = q.where(Study.source == source)
        if since:
            q = q.where(Study.received_at >= since)
        if until:
            q = q.where(Study.received_at < until)
        if cursor:
            q = q.where(Study.worklist_key > cursor)
        with self._sessions() as s:
            rows = list(s.scalars(q))
        nxt = rows[limit - 1].worklist_key if len(rows) > limit else None
        return rows[:limit], nxt

    def worklist_counts(self) -> dict[str, int]:
        """Counts for the top of the worklist: ``unread``, ``unread_flagged`` (indexed), ``total``."""
        with self._sessions() as s:
            unread = s.scalar(select(func.count()).select_from(Study).where(Study.read_status == "unread")) or 0
            flagged = (
                s.scalar(
                    select(func.count())
                    .select_from(Study)
                    .where(Study.read_status == "unread", Study.triage == "finding")
                )
                or 0
            )
            total = s.scalar(select(func.count()).select_from(Study)) or 0
        return {"unread": int(unread), "unread_flagged": int(flagged), "total": int(total)}

    # -- monitoring -------------------------------------------------------
    def signed_reads(self, since: str | None = None) -> list[dict[str, Any]]:
        """Studies with a recorded reader's call, for monitoring against signed reads.

        Parameters
        ----------
        since : str, optional
            Only reads signed (latest version) at or after this ISO 8601 time.

        Returns
        -------
        list of dict
            ``study_id``, ``received_at``, ``first_signed_at``, ``signed_at``, ``reader_finding``,
            ``reference_label``, ``triage`` and ``results`` (``model_name``, ``flag``, ``priority``, ``applicable``).
        """
        q = select(Study).where(Study.reader_finding.is_not(None), Study.first_signed_at.is_not(None))
        if since:
            q = q.where(Study.signed_at >= since)
        with self._sessions() as s:
            rows = list(s.scalars(q.order_by(Study.signed_at)))
        return [
            {
                "study_id": st.id,
                "received_at": st.received_at,
                "first_signed_at": st.first_signed_at,
                "signed_at": st.signed_at,
                "reader_finding": bool(st.reader_finding),
                "reference_label": st.reference_label,
                "triage": st.triage,
                "results": [
                    {"model_name": r.model_name, "flag": r.flag, "priority": r.priority, "applicable": r.applicable}
                    for r in st.results
                ],
            }
            for st in rows
        ]

    def model_scores(self, since: str | None = None, limit: int = 20_000) -> dict[str, dict[str, list[Any]]]:
        """Each model's priority scores and applicability on the most recent studies.

        Parameters
        ----------
        since : str, optional
            Only studies received at or after this ISO 8601 time.
        limit : int
            At most this many results (the newest).

        Returns
        -------
        dict
            ``model_name -> {"priority": [float], "applicable": [bool]}``.
        """
        q = select(ModelResult.model_name, ModelResult.priority, ModelResult.applicable).join(
            Study, Study.id == ModelResult.study_id
        )
        if since:
            q = q.where(Study.received_at >= since)
        out: dict[str, dict[str, list[Any]]] = {}
        with self._sessions() as s:
            for name, prio, applicable in s.execute(q.order_by(Study.received_at.desc()).limit(limit)):
                d = out.setdefault(str(name), {"priority": [], "applicable": []})
                d["priority"].append(float(prio))
                d["applicable"].append(bool(applicable))
        return out

    def audit_counts(self, actions: tuple[str, ...], since: str | None = None) -> dict[tuple[str, str], int]:
        """Audit rows per ``(action, detail)`` of the given actions (e.g. ``upload``, ``upload_refused``)."""
        q = select(AuditEvent.action, AuditEvent.detail, func.count()).where(AuditEvent.action.in_(actions))
        if since:
            q = q.where(AuditEvent.at >= since)
        with self._sessions() as s:
            rows = s.execute(q.group_by(AuditEvent.action, AuditEvent.detail)).all()
        return {(str(a), str(d or "")): int(n) for a, d, n in rows}

    # -- report versions --------------------------------------------------
    def sign_report(
        self,
        study_id: str,
        report: dict[str, Any],
        *,
        username: str,
        reader_label: str | None,
        reader_finding: bool | None,
        reader_agrees: bool | None,
        amend: bool,
    ) -> Study:
        """Store a signed report as a new version (1 = signature, > 1 = amendment) and update the study.

        Parameters
        ----------
        study_id : str
        report : dict
            The signed report (``status == "signed"``, ``signed_by``, ``signed_at``).
        username : str
            The logged-in user.
        reader_label, reader_finding, reader_agrees
            The reader's call (stored on the version and, as the reference label, on the study).
        amend : bool
            False: first signature (conflict when signed already). True: amendment (conflict when not signed yet).

        Returns
        -------
        Study
            The updated study.

        Raises
        ------
        KeyError
            No such study.
        ReportConflictError
            Signing a signed report, amending an unsigned one, or another signature won the race.
        """
        with self._sessions() as s:
            st = s.get(Study, study_id)
            if st is None:
                raise KeyError(study_id)
            last = s.scalar(select(func.max(ReportVersion.version)).where(ReportVersion.study_id == study_id)) or 0
            if last and not amend:
                raise ReportConflictError(
                    f"report of study {study_id} is already signed (version {last}); amend it instead"
                )
            if amend and not last:
                raise ReportConflictError(f"report of study {study_id} is not signed yet: nothing to amend")
            version = last + 1
            report = {**report, "version": version}
            s.add(
                ReportVersion(
                    study_id=study_id,
                    version=version,
                    kind="amend" if amend else "sign",
                    report=report,
                    reader_label=reader_label,
                    reader_finding=reader_finding,
                    reader_agrees=reader_agrees,
                    ai_label=st.triage,
                    username=username[:64],
                    signed_by=report["signed_by"],
                    signed_at=report["signed_at"],
                )
            )
            st.report = report
            st.report_status = "signed"
            st.signed_by = report["signed_by"]
            st.signed_at = report["signed_at"]
            st.read_status = "amended" if amend else "signed"
            st.reference_label = reader_label
            st.reader_finding = reader_finding
            st.reader_agrees = reader_agrees
            if st.first_signed_at is None:
                st.first_signed_at = report["signed_at"]
            st.worklist_key = _key_of(st)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise ReportConflictError(f"report of study {study_id} was signed by someone else meanwhile") from None
            return st

    def report_versions(self, study_id: str) -> list[ReportVersion]:
        """Every signed version of a study's report, oldest first (empty for an unsigned report)."""
        with self._sessions() as s:
            q = select(ReportVersion).where(ReportVersion.study_id == study_id).order_by(ReportVersion.version)
            return list(s.scalars(q))

    # -- notification outbox ----------------------------------------------
    def add_notification(self, key: str, study_id: str, channel: str, payload: dict[str, Any]) -> bool:
        """Queue a notification unless one with this idempotency key exists.

        Returns
        -------
        bool
            True when queued now, False when it existed (queued before, e.g. a duplicate upload).
        """
        row = Notification(
            key=key,
            study_id=study_id,
            channel=channel,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=time.time(),
            created_at=utc_now(),
        )
        with self._sessions() as s:
            s.add(row)
            try:
                s.commit()
                return True
            except IntegrityError:
                s.rollback()
                return False

    def due_notifications(self, now: float | None = None, limit: int = 20) -> list[Notification]:
        """Pending notifications whose next attempt is due, oldest first."""
        t = time.time() if now is None else now
        with self._sessions() as s:
            q = (
                select(Notification)
                .where(Notification.status == "pending", Notification.next_attempt_at <= t)
                .order_by(Notification.next_attempt_at, Notification.id)
                .limit(limit)
            )
            return list(s.scalars(q))

    def notification_attempted(
        self, row_id: int, *, delivered: bool, error: str | None = None, retry_at: float | None = None
    ) -> None:
        """Record one delivery attempt: delivered, to be retried at ``retry_at``, or (``retry_at`` None) failed."""
        values: dict[str, Any] = {"attempts": Notification.attempts + 1, "last_error": (error or None) and error[:200]}
        if delivered:
            values.update(status="delivered", delivered_at=utc_now(), last_error=None)
        elif retry_at is not None:
            values.update(next_attempt_at=retry_at)
        else:
            values.update(status="failed")
        with self._sessions() as s:
            s.execute(update(Notification).where(Notification.id == row_id).values(**values))
            s.commit()

    def notifications(self, study_id: str | None = None, limit: int = 100) -> list[Notification]:
        """Notifications newest first, optionally of one study."""
        with self._sessions() as s:
            q = select(Notification)
            if study_id is not None:
                q = q.where(Notification.study_id == study_id)
            return list(s.scalars(q.order_by(Notification.id.desc()).limit(limit)))
