"""The one declaration of a stored study: the SQLAlchemy mapped class :class:`Study`.

The database schema is created from it by the Alembic migrations in
:mod:`cxrtriage.store.migrations` (never by ``create_all`` at start-up), and the
API schema :class:`cxrtriage.serve.schemas.StudyOut` reads its columns by name.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Double, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AuditEvent", "Base", "JSONValue", "ROLES", "Study", "User"]

#: User roles: ``uploader`` uploads and reads studies; ``radiologist`` also signs reports off.
ROLES = ("uploader", "radiologist")

#: JSON column type: Python ``None`` is stored as SQL NULL (not the JSON text ``null``).
#: Plain ``json`` on PostgreSQL (not ``jsonb``), so the key order of the stored
#: dictionaries, and hence of the API answers, is kept.
JSONValue = JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base of the study store (its ``metadata`` is Alembic's target)."""


class Study(Base):
    """One analysed upload: model output, draft or signed report, and where its image is.

    Attributes
    ----------
    id : str
        16 hex characters (primary key).
    received_at : str
        ISO 8601 UTC time with milliseconds, e.g. ``2026-01-02T03:04:05.678+00:00``
        (sorts chronologically as text).
    sha256 : str
        Hex SHA-256 of the decoded pixels and their shape (``cxrtriage.serve.service.pixel_sha256``;
        never of the uploaded file, whose metadata may identify the patient). ``(sha256, model_version)`` is unique.
    source_format : {"png", "jpeg", "dicom"}
    image_file : str
        Path of the stored PNG, relative to the data folder.
    width, height : int
        Pixels of the decoded image.
    label : str
        Predicted class.
    probabilities : dict of str to float
        Class probabilities (sum 1).
    threshold : float or None
        Decision threshold on ``positive_class`` (binary tasks).
    positive_class : str or None
    triage : {"no_finding", "finding"}
    model_name, model_version, backend : str
        Model folder name, model version, ``"onnxruntime"`` or ``"torch"``.
    heat_class : str or None
        Class whose activation map is stored.
    cam : list of list of float or None
        ``(h, w)`` normalised class activation map in [0, 1].
    ood_score : float or None
        Squared Mahalanobis distance (when a detector is fitted).
    dicom_meta : dict or None
        De-identified DICOM attributes (DICOM uploads only).
    report : dict
        The structured report (:mod:`cxrtriage.report.draft`).
    report_status : {"draft", "signed"}
        Mirrors ``report["status"]``.
    signed_by, signed_at : str or None
        Mirror the report's sign-off.
    timings : dict of str to float
        Milliseconds per stage of the first analysis.
    """

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("sha256", "model_version", name="uq_studies_sha256_model_version"),
        Index("studies_received", "received_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    received_at: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    source_format: Mapped[str] = mapped_column(String(16))
    image_file: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONValue)
    threshold: Mapped[float | None] = mapped_column(Double)
    positive_class: Mapped[str | None] = mapped_column(Text)
    triage: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(200))
    backend: Mapped[str] = mapped_column(String(32))
    heat_class: Mapped[str | None] = mapped_column(Text)
    cam: Mapped[list[list[float]] | None] = mapped_column(JSONValue)
    ood_score: Mapped[float | None] = mapped_column(Double)
    dicom_meta: Mapped[dict[str, Any] | None] = mapped_column(JSONValue)
    report: Mapped[dict[str, Any]] = mapped_column(JSONValue)
    report_status: Mapped[str] = mapped_column(String(16))
    signed_by: Mapped[str | None] = mapped_column(Text)
    signed_at: Mapped[str | None] = mapped_column(String(40))
    timings: Mapped[dict[str, float]] = mapped_column(JSONValue)

    def to_dict(self) -> dict[str, Any]:
        """Column name -> value (JSON columns as Python objects).

        Returns
        -------
        dict of str to object
            One entry per mapped column, in declaration order.
        """
        return {attr.key: getattr(self, attr.key) for attr in self.__mapper__.column_attrs}

    def __repr__(self) -> str:
        return f"Study(id={self.id!r}, label={self.label!r}, model_version={self.model_version!r})"


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
