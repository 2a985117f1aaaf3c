"""The one declaration of a stored study: the SQLAlchemy mapped classes :class:`Study` and :class:`ModelResult`.

A study is one analysed image; it holds one :class:`ModelResult` per model that
analysed it (several models behind one upload) and the combined triage.

The database schema is created from it by the Alembic migrations in
:mod:`cxrtriage.store.migrations` (never by ``create_all`` at start-up), and the
API schema :class:`cxrtriage.serve.schemas.StudyOut` reads its columns by name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, Boolean, Double, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "AuditEvent",
    "Base",
    "JSONValue",
    "ModelResult",
    "Notification",
    "READ_STATUSES",
    "ROLES",
    "ReportVersion",
    "SOURCES",
    "Study",
    "User",
    "model_set_key",
]

#: User roles: ``uploader`` uploads and reads studies; ``radiologist`` also signs reports off.
ROLES = ("uploader", "radiologist")

#: Worklist status of a study: nobody has opened it; a radiologist opened it (report still a draft);
#: signed; signed and amended at least once.
READ_STATUSES = ("unread", "draft", "signed", "amended")
#: Where a study came from: the web page / REST upload, a PACS C-STORE, a DICOMweb STOW-RS request.
SOURCES = ("upload", "pacs", "stow")

#: JSON column type: Python ``None`` is stored as SQL NULL (not the JSON text ``null``).
#: Plain ``json`` on PostgreSQL (not ``jsonb``), so the key order of the stored
#: dictionaries, and hence of the API answers, is kept.
JSONValue = JSON(none_as_null=True)


def model_set_key(versions: Iterable[str]) -> str:
    """Key of a set of model versions: the :attr:`Study.model_set` of studies those models analysed.

    Parameters
    ----------
    versions : iterable of str
        The model versions (order and repeats do not matter).

    Returns
    -------
    str
        16 hex characters: the start of the SHA-256 of the sorted, distinct versions joined by newlines.
    """
    return hashlib.sha256("\n".join(sorted(set(versions))).encode()).hexdigest()[:16]


class Base(DeclarativeBase):
    """Declarative base of the study store (its ``metadata`` is Alembic's target)."""


class Study(Base):
    """One analysed image: where it is, its combined triage, its report; one :class:`ModelResult` per model.

    Attributes
    ----------
    id : str
        16 hex characters (primary key).
    received_at : str
        ISO 8601 UTC time with milliseconds, e.g. ``2026-01-02T03:04:05.678+00:00``
        (sorts chronologically as text).
    sha256 : str
        Hex SHA-256 of the decoded pixels and their shape (``cxrtriage.serve.service.pixel_sha256``;
        never of the uploaded file, whose metadata may identify the patient).
    model_set : str
        Key of the set of model versions that analysed the image (16 hex characters,
        ``cxrtriage.serve.service.model_set_key``). ``(sha256, model_set)`` is unique: the same
        image analysed by the same models is one study.
    source : {"upload", "pacs", "stow"}
        How the image arrived (:data:`SOURCES`).
    source_format : {"png", "jpeg", "dicom"}
    image_file : str
        Path of the stored PNG, relative to the data folder.
    width, height : int
        Pixels of the decoded image.
    triage : {"no_finding", "finding"}
        ``finding`` when at least one applicable model flags the image.
    priority : float
        In [0, 1]: the largest :attr:`ModelResult.priority` over the applicable results
        (0 when none applies); the worklist is ordered by it.
    dicom_meta : dict or None
        De-identified DICOM attributes (DICOM uploads only).
    report : dict
        The structured report (:mod:`cxrtriage.report.draft`), combining every model.
    report_status : {"draft", "signed"}
        Mirrors ``report["status"]``.
    signed_by, signed_at : str or None
        Mirror the report's sign-off.
    timings : dict of str to float
        Milliseconds per stage of the first analysis.
    read_status : {"unread", "draft", "signed", "amended"}
        Worklist status (:data:`READ_STATUSES`).
    reference_label : str or None
        The signing radiologist's own label (the study's reference standard), from the latest report version.
    reader_finding : bool or None
        Whether that label is a finding (not one of the tasks' normal classes).
    reader_agrees : bool or None
        Whether the radiologist marked agreement with the AI label.
    first_signed_at : str or None
        ISO 8601 UTC time of the first signature (turnaround = this - ``received_at``).
    original_file : str or None
        Path (relative to the data folder) of the original 16-bit pixels of a DICOM upload (16-bit grayscale
        PNG, after the modality LUT, MONOCHROME1 inverted), for window/level in the viewer.
    original_offset : float or None
        Value to add to the stored 16-bit pixels to get the modality values (e.g. Hounsfield-like units).
    worklist_key : str
        Sort key of the worklist (:func:`cxrtriage.store.reads.worklist_key`): unread first, then flagged,
        then AI priority descending, then oldest first; one indexed column so that keyset pagination is one
        comparison.
    lungs : dict or None
        The lung segmentation of the image (:meth:`cxrtriage.segment.LungMask.as_dict`: ``lung_fraction``,
        ``failed``, ``reason``, ``components``) and the segmenter's ``version``; None when no segmenter ran.
    results : list of ModelResult
        One per model, ordered by :attr:`ModelResult.position` (loaded with the study).
    """

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("sha256", "model_set", name="uq_studies_sha256_model_set"),
        Index("studies_received", "received_at"),
        Index("studies_worklist", "worklist_key"),
        Index("studies_status_triage", "read_status", "triage"),
        Index("studies_priority", "priority"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    model_set: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16), default="upload", server_default="upload")
    source_format: Mapped[str] = mapped_column(String(16))
    image_file: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    triage: Mapped[str] = mapped_column(String(32))
    priority: Mapped[float] = mapped_column(Double, default=0.0, server_default="0")
    dicom_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    report: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    report_status: Mapped[str] = mapped_column(String(16))
    signed_by: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[str | None] = mapped_column(String(40))
    timings: Mapped[dict[str, float]] = mapped_column(JSONValue)
    read_status: Mapped[str] = mapped_column(String(16), default="unread", server_default="unread")
    reference_label: Mapped[str | None] = mapped_column(Text, default=None)
    reader_finding: Mapped[bool | None] = mapped_column(Boolean, default=None)
    reader_agrees: Mapped[bool | None] = mapped_column(Boolean, default=None)
    first_signed_at: Mapped[str | None] = mapped_column(String(40), default=None)
    original_file: Mapped[str | None] = mapped_column(Text, default=None)
    original_offset: Mapped[float | None] = mapped_column(Double, default=None)
    worklist_key: Mapped[str] = mapped_column(String(120), default="", server_default="")
    lungs: Mapped[dict[str, Any] | None] = mapped_column(JSONValue, default=None)
    results: Mapped[list[ModelResult]] = relationship(
        back_populates="study",
        order_by="ModelResult.position",
        lazy="selectin",
        cascade="all, delete-orphan",
    )

    def to_dict(self) -> dict[str, Any]:
        """Column name -> value (JSON columns as Python objects); ``results`` not included.

        Returns
        -------
        dict of str to object
            One entry per mapped column, in declaration order.
        """
        return {attr.key: getattr(self, attr.key) for attr in self.__mapper__.column_attrs}

    def result(self, model_name: str | None = None) -> ModelResult | None:
        """The result of the model named ``model_name`` (default: the first), or None.

        Parameters
        ----------
        model_name : str, optional
            :attr:`ModelResult.model_name`.

        Returns
        -------
        ModelResult or None
        """
        if model_name is None:
            return self.results[0] if self.results else None
        return next((r for r in self.results if r.model_name == model_name), None)

    def __repr__(self) -> str:
        return f"Study(id={self.id!r}, triage={self.triage!r}, model_set={self.model_set!r})"


class ModelResult(Base):
    """The output of one model for one study.

    Attributes
    ----------
    id : int
        Autoincrement primary key.
    study_id : str
        The study (foreign key ``studies.id``, indexed).
    position : int
        0-based order of the model on the server (the order of ``cxr serve --model``).
    model_name, model_version, task, backend : str
        Model folder name, model version, task name, ``"onnxruntime"`` or ``"torch"``.
    label : str
        Predicted class.
    probabilities : dict of str to float
        Calibrated class probabilities (sum 1), in the model's class order.
    threshold : float or None
        Decision threshold on ``positive_class`` (binary tasks).
    positive_class : str or None
    flag : bool
        The model raised a finding (its triage is ``finding``).
    priority : float
        In [0, 1]: the calibrated probability of a finding according to this model,
        1 - P(normal classes of the task) (= P(positive class) for binary tasks).
    applicable : bool
        The image lies inside the population the model was validated on (gate 2).
    population_warning : str or None
        Why not, when ``applicable`` is False, e.g.
        ``"outside the validated population: pediatric model, adult image"``.
    heat_class : str or None
        Class whose activation map is stored.
    cam : list of list of float or None
        ``(h, w)`` normalised class activation map in [0, 1].
    ood_score : float or None
        Squared Mahalanobis distance on the model's pooled features (when a detector is fitted).
    cam_in_lungs : float or None
        Share in [0, 1] of the activation map's mass inside the lung fields (None: no heatmap or the
        segmentation failed); the lungs' own area share is the chance level.
    """

    __tablename__ = "model_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(String(32), ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    model_name: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(Text)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONValue)
    threshold: Mapped[float | None] = mapped_column(Double)
    positive_class: Mapped[str | None] = mapped_column(Text)
    flag: Mapped[bool] = mapped_column(Boolean)
    priority: Mapped[float] = mapped_column(Double)
    applicable: Mapped[bool] = mapped_column(Boolean, default=True)
    population_warning: Mapped[str | None] = mapped_column(Text)
    heat_class: Mapped[str | None] = mapped_column(Text)
    cam: Mapped[list[list[float]] | None] = mapped_column(JSONValue)
    ood_score: Mapped[float | None] = mapped_column(Double)
    cam_in_lungs: Mapped[float | None] = mapped_column(Double, default=None)
    study: Mapped[Study] = relationship(back_populates="results")

    def to_dict(self) -> dict[str, Any]:
        """Column name -> value (JSON columns as Python objects), in declaration order."""
        return {attr.key: getattr(self, attr.key) for attr in self.__mapper__.column_attrs}

    @property
    def triage(self) -> str:
        """``"finding"`` when :attr:`flag`, else ``"no_finding"``."""
        return "finding" if self.flag else "no_finding"

    def __repr__(self) -> str:
        return f"ModelResult(study_id={self.study_id!r}, model_name={self.model_name!r}, label={self.label!r})"


class User(Base):
    """A person allowed to use the server.

    Attributes
    ----------
    username : str
        Login name (primary key), 1-64 characters of ``[A-Za-z0-9._@-]``.
    password_hash : str
        Argon2id hash in PHC string format (``$argon2id$v=19$m=...``), made by
        :func:`cxrtriage.store.users.hash_password`; the password itself is never stored.
    role : {"uploader", "radiologist"}
        ``uploader``: upload and read studies; ``radiologist``: also sign reports off.
    created_at : str
        ISO 8601 UTC time.
    """

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[str] = mapped_column(String(40))

    def __repr__(self) -> str:
        return f"User(username={self.username!r}, role={self.role!r})"


class AuditEvent(Base):
    """One row of the audit log: who did what to which study, when.

    Attributes
    ----------
    id : int
        Autoincrement primary key.
    at : str
        ISO 8601 UTC time with milliseconds.
    username : str or None
        The authenticated user (None for a failed login with an unknown name).
    action : str
        E.g. ``login``, ``login_failed``, ``upload``, ``read``, ``list``, ``sign_off``, ``refused``.
    study_id : str or None
        The study concerned, if any.
    detail : str or None
        What was read (``json``, ``image.png``, ``report.pdf``, ``page``...) or why it was refused;
        at most 200 characters, never patient data.
    """

    __tablename__ = "audit_log"
    __table_args__ = (Index("audit_log_at", "at"), Index("audit_log_study", "study_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[str] = mapped_column(String(40))
    username: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(200))


class ReportVersion(Base):
    """One signed version of a study's report; a signed report is never overwritten.

    Version 1 is the first signature; each amendment adds the next version, so the
    history of a report is its rows in ``version`` order.

    Attributes
    ----------
    id : int
        Autoincrement primary key.
    study_id : str
        The study.
    version : int
        1, 2, ...; ``(study_id, version)`` is unique.
    kind : {"sign", "amend"}
    report : dict
        The whole signed report (:mod:`cxrtriage.report.draft`) of this version.
    reader_label : str or None
        The radiologist's own label.
    reader_finding : bool or None
        Whether ``reader_label`` is a finding.
    reader_agrees : bool or None
        Agreement with the AI label, as marked by the radiologist.
    ai_label : str
        The AI's combined call the reader judged: ``finding`` or ``no_finding`` (the study's triage).
    username : str
        The logged-in user who signed.
    signed_by : str
        Display name and user name as printed on the report.
    signed_at : str
        ISO 8601 UTC time.
    """

    __tablename__ = "report_versions"
    __table_args__ = (
        UniqueConstraint("study_id", "version", name="uq_report_versions_study_version"),
        Index("report_versions_signed", "signed_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    reader_label: Mapped[str | None] = mapped_column(Text)
    reader_finding: Mapped[bool | None] = mapped_column(Boolean)
    reader_agrees: Mapped[bool | None] = mapped_column(Boolean)
    ai_label: Mapped[str] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(64))
    signed_by: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[str] = mapped_column(String(40))

    def to_dict(self) -> dict[str, Any]:
        """Column name -> value."""
        return {attr.key: getattr(self, attr.key) for attr in self.__mapper__.column_attrs}


class Notification(Base):
    """A critical-finding notification waiting for, or done with, delivery (the outbox of :mod:`cxrtriage.serve.notify`).

    Rows are written in the same process that stored the study and removed from the
    queue only when delivered, so a restart resumes the pending ones (at-least-once).

    Attributes
    ----------
    id : int
        Autoincrement primary key.
    key : str
        Idempotency key ``<study_id>:<channel>`` (unique): sent as the ``Idempotency-Key`` header
        so a receiver can drop a repeated delivery.
    study_id : str
    channel : {"webhook", "email"}
    payload : dict
        The JSON body (webhook) or the message fields (e-mail); no patient data.
    status : {"pending", "delivered", "failed"}
        ``failed`` after the configured number of attempts.
    attempts : int
    next_attempt_at : float
        Unix time of the next attempt (exponential backoff).
    created_at : str
    delivered_at : str or None
    last_error : str or None
        At most 200 characters.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("key", name="uq_notifications_key"),
        Index("notifications_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(80))
    study_id: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[float] = mapped_column(Double)
    created_at: Mapped[str] = mapped_column(String(40))
    delivered_at: Mapped[str | None] = mapped_column(String(40))
    last_error: Mapped[str | None] = mapped_column(String(200))
