"""The outbox: DICOM objects waiting to be sent to a PACS, persisted so that an outage loses nothing.

Each row is one DICOM object (an SR or a heatmap Secondary Capture, as Part 10
bytes) for one destination (``AE@host:port``). A row is written before the
received image is acknowledged, so a result exists either in the outbox or in
the PACS, across restarts and outages. Once the PACS has accepted it, the
row's bytes are erased (they hold the patient identifiers needed to file the
result into the right study) and only the bookkeeping stays (``status = sent``).

Several senders may share one database: a row is *claimed* (``claimed_until``)
by one of them before sending, and ``(sop_instance_uid, destination)`` is
unique, so an object is never queued twice for the same destination.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Double, Index, Integer, LargeBinary, String, UniqueConstraint, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from cxrtriage.store.models import Base
from cxrtriage.store.store import StudyStore
from cxrtriage.store.users import utc_now

__all__ = ["OutboxItem", "Outbox", "OutgoingObject"]


class OutboxItem(Base):
    """One DICOM object to send (or sent) to one destination.

    Attributes
    ----------
    id : int
        Autoincrement primary key (the sending order).
    created_at : str
        ISO 8601 UTC time it was queued.
    study_id : str or None
        The study record the object reports on.
    kind : str
        ``"sr"`` (structured report) or ``"sc"`` (heatmap Secondary Capture).
    destination : str
        ``AE@host:port`` of the receiving PACS.
    sop_class_uid, sop_instance_uid : str
        The object's SOP Class and SOP Instance UIDs.
    dataset : bytes or None
        DICOM Part 10 file bytes; None once sent (erased: it carries patient identifiers).
    status : {"pending", "sent"}
    attempts : int
        Association attempts made so far.
    next_attempt_at : float
        Unix time (seconds) of the next attempt.
    claimed_until : float or None
        Unix time until which a sender holds the row.
    last_error : str or None
        Why the last attempt failed (at most 200 characters).
    sent_at : str or None
        ISO 8601 UTC time the PACS accepted it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", "destination", name="uq_outbox_instance_destination"),
        Index("outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[str] = mapped_column(String(40))
    study_id: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    destination: Mapped[str] = mapped_column(String(200))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    claimed_until: Mapped[float | None] = mapped_column(Double)
    last_error: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[str | None] = mapped_column(String(40))

    def __repr__(self) -> str:
        return f"OutboxItem(id={self.id}, kind={self.kind!r}, status={self.status!r}, attempts={self.attempts})"


@dataclass(frozen=True)
class OutgoingObject:
    """A DICOM object to queue: ``kind``, its UIDs and Part 10 ``data``, and the study it reports on."""

    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    data: bytes
    study_id: str | None = None


class Outbox:
    """The ``outbox`` table of a :class:`~cxrtriage.store.StudyStore` (same database, same migrations).

    Parameters
    ----------
    store : StudyStore
    """

    def __init__(self, store: StudyStore) -> None:
        self.store = store

    def enqueue(self, objects: Sequence[OutgoingObject], destination: str) -> int:
        """Queue objects for ``destination``; an object already queued (or sent) there is skipped.

        Returns
        -------
        int
            Number of rows added.
        """
        added = 0
        now = time.time()
        for o in objects:
            row = OutboxItem(
                created_at=utc_now(),
                study_id=o.study_id,
                kind=o.kind,
                destination=destination,
                sop_class_uid=o.sop_class_uid,
                sop_instance_uid=o.sop_instance_uid,
                dataset=o.data,
                status="pending",
                attempts=0,
                next_attempt_at=now,
            )
            with self.store._sessions() as s:
                s.add(row)
                try:
                    s.commit()
                    added += 1
                except IntegrityError:  # the same object for the same destination: already queued or sent
                    s.rollback()
        return added

    def claim(self, destination: str, limit: int = 16, lease_s: float = 120.0) -> list[OutboxItem]:
        """Claim up to ``limit`` due pending rows for ``destination`` (oldest first) for ``lease_s`` seconds.

        A row claimed by another sender whose lease has not run out is skipped.
        """
        now = time.time()
        due = (
            (OutboxItem.destination == destination)
            & (OutboxItem.status == "pending")
            & (OutboxItem.next_attempt_at <= now)
            & (OutboxItem.claimed_until.is_(None) | (OutboxItem.claimed_until < now))
        )
        with self.store._sessions() as s:
            ids = list(s.scalars(select(OutboxItem.id).where(due).order_by(OutboxItem.id).limit(limit)))
            mine = []
            for i in ids:
                res = s.execute(
                    update(OutboxItem).where(due & (OutboxItem.id == i)).values(claimed_until=now + lease_s)
                )
                if getattr(res, "rowcount", 0) == 1:
                    mine.append(i)
            s.commit()
            if not mine:
                return []
            return list(s.scalars(select(OutboxItem).where(OutboxItem.id.in_(mine)).order_by(OutboxItem.id)))

    def mark_sent(self, item_id: int) -> None:
        """The PACS accepted the object: status ``sent``, bytes erased, lease released."""
        with self.store._sessions() as s:
            s.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id)
                .values(status="sent", dataset=None, sent_at=utc_now(), claimed_until=None, last_error=None)
            )
            s.commit()

    def mark_failed(self, item_id: int, error: str, retry_in_s: float) -> None:
        """An attempt failed: count it, note why, retry after ``retry_in_s`` seconds."""
        with self.store._sessions() as s:
            s.execute(
                update(OutboxItem)
                .where(OutboxItem.id == item_id)
                .values(
                    attempts=OutboxItem.attempts + 1,
                    last_error=error[:200],
                    next_attempt_at=time.time() + retry_in_s,
                    claimed_until=None,
                )
            )
            s.commit()

    def counts(self, destination: str | None = None) -> dict[str, int]:
        """Number of rows per status, e.g. ``{"pending": 2, "sent": 10}``."""
        q = select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
        if destination is not None:
            q = q.where(OutboxItem.destination == destination)
        with self.store._sessions() as s:
            return {k: int(v) for k, v in s.execute(q).all()}

    def items(self, study_id: str | None = None) -> list[OutboxItem]:
        """All rows (of one study), oldest first."""
        q = select(OutboxItem).order_by(OutboxItem.id)
        if study_id is not None:
            q = q.where(OutboxItem.study_id == study_id)
        with self.store._sessions() as s:
            return list(s.scalars(q))
