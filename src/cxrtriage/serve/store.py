"""Persistence: an SQLite table of studies and the images on disk, keyed by SHA-256.

Layout of ``--data-dir``::

    studies.sqlite3            one row per accepted study (WAL journal)
    images/ab/<sha256>.png     the decoded grayscale pixels of the upload (no metadata)
    derived/<id>-*.png         annotated image and heatmap overlay, rendered on first request

Only pixels and de-identified data are stored: PNG/JPEG uploads are kept as
their decoded 8-bit grayscale pixels (EXIF and text chunks dropped), DICOM
uploads as their display-ready pixels plus the allow-listed technical
attributes of :mod:`cxrtriage.data.dicom`. Upload file names are not stored.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["StudyStore", "StudyRecord", "DB_NAME"]

DB_NAME = "studies.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id             TEXT PRIMARY KEY,
    received_at    TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    source_format  TEXT NOT NULL,
    image_file     TEXT NOT NULL,
    width          INTEGER NOT NULL,
    height         INTEGER NOT NULL,
    label          TEXT NOT NULL,
    probabilities  TEXT NOT NULL,
    threshold      REAL,
    positive_class TEXT,
    triage         TEXT NOT NULL,
    model_name     TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    backend        TEXT NOT NULL,
    heat_class     TEXT,
    cam            TEXT,
    ood_score      REAL,
    dicom_meta     TEXT,
    report         TEXT NOT NULL,
    report_status  TEXT NOT NULL,
    signed_by      TEXT,
    signed_at      TEXT,
    timings        TEXT NOT NULL,
    UNIQUE (sha256, model_version)
);
CREATE INDEX IF NOT EXISTS studies_received ON studies (received_at);
"""

_JSON_COLS = ("probabilities", "cam", "dicom_meta", "report", "timings")


@dataclass
class StudyRecord:
    """One row of ``studies`` with JSON columns decoded.

    Attributes
    ----------
    id : str
        16 hex characters.
    received_at : str
        ISO 8601 UTC.
    sha256 : str
        Hex SHA-256 of the uploaded bytes.
    source_format : {"png", "jpeg", "dicom"}
    image_file : str
        Path of the stored PNG, relative to the data folder.
    width, height : int
        Pixels of the decoded image.
    label, triage : str
    probabilities : dict str -> float
    threshold : float or None
    positive_class : str
    model_name, model_version, backend : str
    heat_class : str or None
        Class whose activation map is shown.
    cam : list of list of float or None
        ``(h, w)`` normalised class activation map in [0, 1].
    ood_score : float or None
        Squared Mahalanobis distance (when a detector is fitted).
    dicom_meta : dict or None
        De-identified DICOM attributes.
    report : dict
        The structured report (:mod:`cxrtriage.report.draft`).
    report_status : {"draft", "signed"}
    signed_by, signed_at : str or None
    timings : dict str -> float
        Milliseconds per stage of the first analysis.
    """

    id: str
    received_at: str
    sha256: str
    source_format: str
    image_file: str
    width: int
    height: int
    label: str
    probabilities: dict
    threshold: float | None
    positive_class: str | None
    triage: str
    model_name: str
    model_version: str
    backend: str
    heat_class: str | None
    cam: list | None
    ood_score: float | None
    dicom_meta: dict | None
    report: dict
    report_status: str
    signed_by: str | None
    signed_at: str | None
    timings: dict

    def to_row(self) -> dict[str, Any]:
        """Column -> SQLite value."""
        row = dict(self.__dict__)
        for c in _JSON_COLS:
            row[c] = None if row[c] is None else json.dumps(row[c], separators=(",", ":"))
        return row


class StudyStore:
    """Thread-safe access to the studies database and image files.

    Parameters
    ----------
    data_dir : path
        Created if missing.

    Notes
    -----
    SQLite in WAL mode with ``synchronous=NORMAL``: a committed study survives
    a crash or kill of the server process (not necessarily a power cut). One
    connection is shared by the worker threads under a lock.
    """

    def __init__(self, data_dir: str | Path):
        self.root = Path(data_dir)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "derived").mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / DB_NAME
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    # -- images ---------------------------------------------------------
    def save_image(self, sha256: str, img: np.ndarray) -> str:
        """Store decoded pixels ``uint8 (H, W)`` as PNG (atomic); returns the relative path."""
        rel = f"images/{sha256[:2]}/{sha256}.png"
        dst = self.root / rel
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{threading.get_ident()}.tmp")
            Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, dst)
        return rel

    def load_image(self, rel: str) -> np.ndarray:
        """Pixels ``uint8 (H, W)`` of a stored image."""
        with Image.open(self.root / rel) as im:
            return np.asarray(im.convert("L"))

    def derived_path(self, study_id: str, kind: str) -> Path:
        """Cache file of a rendered picture (``kind``: annotated, heatmap, image)."""
        return self.root / "derived" / f"{study_id}-{kind}.png"

    def write_derived(self, study_id: str, kind: str, png: bytes) -> Path:
        """Write a rendered PNG atomically and return its path."""
        dst = self.derived_path(study_id, kind)
        tmp = dst.with_name(f".{dst.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, dst)
        return dst

    # -- rows -----------------------------------------------------------
    def _record(self, row: sqlite3.Row | None) -> StudyRecord | None:
        if row is None:
            return None
        d = dict(row)
        for c in _JSON_COLS:
            d[c] = None if d[c] is None else json.loads(d[c])
        return StudyRecord(**d)

    def get(self, study_id: str) -> StudyRecord | None:
        """The study with this id, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM studies WHERE id = ?", (study_id,)).fetchone()
        return self._record(row)

    def find(self, sha256: str, model_version: str) -> StudyRecord | None:
        """The study of an upload already analysed by this model version, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM studies WHERE sha256 = ? AND model_version = ?", (sha256, model_version)
            ).fetchone()
        return self._record(row)

    def insert(self, rec: StudyRecord) -> tuple[StudyRecord, bool]:
        """Insert a study; if the same upload was stored meanwhile, return that one.

        Returns
        -------
        (record, inserted)
            ``inserted`` is False when an existing row with the same
            ``(sha256, model_version)`` was returned instead.
        """
        row = rec.to_row()
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self._lock:
            try:
                self._db.execute(f"INSERT INTO studies ({cols}) VALUES ({marks})", row)
                return rec, True
            except sqlite3.IntegrityError:
                existing = self._db.execute(
                    "SELECT * FROM studies WHERE sha256 = ? AND model_version = ?", (rec.sha256, rec.model_version)
                ).fetchone()
        if existing is None:
            raise RuntimeError("study id collision")
        return self._record(existing), False

    def update_report(self, study_id: str, report: dict) -> None:
        """Store a new version of a study's report (status and sign-off columns follow it)."""
        with self._lock:
            self._db.execute(
                "UPDATE studies SET report = ?, report_status = ?, signed_by = ?, signed_at = ? WHERE id = ?",
                (
                    json.dumps(report, separators=(",", ":")),
                    report["status"],
                    report.get("signed_by"),
                    report.get("signed_at"),
                    study_id,
                ),
            )

    def count(self) -> int:
        """Number of stored studies."""
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM studies").fetchone()[0])

    def recent(self, limit: int = 20, offset: int = 0) -> list[StudyRecord]:
        """Newest studies first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM studies ORDER BY received_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [self._record(r) for r in rows]

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
            return True
        except sqlite3.Error:
            return False


def png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode a PIL image as PNG bytes (fast compression)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
