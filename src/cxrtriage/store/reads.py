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

from cxrtriage.store.models import Notification, ReportVersion, Study
from cxrtriage.store.users import utc_now

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["ReadsMixin", "ReportConflictError", "worklist_key", "PRIORITY_DIGITS"]

#: Digits of the priority part of the worklist key (resolution 1e-6).
PRIORITY_DIGITS = 7
_NO_PRIORITY = "9" * PRIORITY_DIGITS


class ReportConflictError(Exception):
    """A sign-off that conflicts with the report's state (signing a signed report, amending a draft, a race)."""


def worklist_key(read_status: str, priority: float | None, received_at: str, study_id: str) -> str:
    """Sort key of the worklist: unread first, then AI priority descending, then oldest first, then id.

    Only digits and lower-case hex of fixed widths, so that byte order, SQLite's ``BINARY`` and any
    PostgreSQL collation sort it alike; one indexed column serves the default order and keyset
    pagination (``worklist_key > :cursor``).

    Parameters
    ----------
    read_status : {"unread", "draft", "signed", "amended"}
    priority : float or None
        Calibrated probability of a finding in [0, 1] (clipped); None (no applicable model) sorts last.
    received_at : str
        ISO 8601 UTC time, ``YYYY-MM-DDTHH:MM:SS.mmm+00:00``.
    study_id : str
        16 hex characters.

    Returns
    -------
    str
        ``1 + 7 + 17 + len(study_id)`` characters: status rank, ``round((1 - priority) * 1e6)`` zero-padded,
        the received time's digits (to milliseconds), the id.
    """
    rank = "0" if read_status == "unread" else "1"
    if priority is None or priority != priority:  # None or NaN
        prio = _NO_PRIORITY
    else:
        p = min(1.0, max(0.0, float(priority)))
        prio = f"{round((1.0 - p) * 10 ** (PRIORITY_DIGITS - 1)):0{PRIORITY_DIGITS}d}"
    digits = re.sub(r"\D", "", received_at[:23])[:17].ljust(17, "0")
    return f"{rank}{prio}{digits}{study_id.lower()}"


def _key_of(study: Study) -> str:
    return worklist_key(study.read_status or "unread", getattr(study, "priority", None), study.received_at, study.id)


@event.listens_for(Study, "before_insert")
def _set_worklist_key(_mapper: Any, _conn: Any, study: Study) -> None:
    """Every inserted study gets its status and sort key."""
    if not study.read_status:
        study.read_status = "unread"
    study.worklist_key = _key_of(study)


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
                    ai_label=st.label,
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
