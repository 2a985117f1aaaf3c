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

__all__ = ["AuditEvent", "Base", "JSONValue", "ModelResult", "ROLES", "SOURCES", "Study", "User", "model_set_key"]

#: User roles: ``uploader`` uploads and reads studies; ``radiologist`` also signs reports off.
ROLES = ("uploader", "radiologist")

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
    results : list of ModelResult
        One per model, ordered by :attr:`ModelResult.position` (loaded with the study).
    """

    __tablename__ = "studies"
    __table_args__ = (
        UniqueConstraint("sha256", "model_set", name="uq_studies_sha256_model_set"),
        Index("studies_received", "received_at"),
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
