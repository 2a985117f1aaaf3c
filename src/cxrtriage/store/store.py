"""Persistence: a ``studies`` table (SQLite or PostgreSQL, via SQLAlchemy) and the images on disk.

Layout of ``--data-dir``::

    studies.sqlite3            one row per accepted study (WAL journal), unless --database-url is given
    images/ab/<sha256>.png     the decoded grayscale pixels of the upload (no metadata)
    derived/<id>-*.png         annotated image and heatmap overlay, rendered on first request

The schema is made and kept up to date by the Alembic migrations of
:mod:`cxrtriage.store.migrations`, applied when a :class:`StudyStore` opens.

Only pixels and de-identified data are stored: PNG/JPEG uploads are kept as
their decoded 8-bit grayscale pixels (EXIF and text chunks dropped), DICOM
uploads as their display-ready pixels plus the allow-listed technical
attributes of :mod:`cxrtriage.data.dicom`. Upload file names are not stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    IntegrityError,
    NoSuchModuleError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from cxrtriage.store.models import ROLES, AuditEvent, Study, User
from cxrtriage.store.users import UserError, check_username, hash_password, utc_now, verify_password

__all__ = [
    "DB_NAME",
    "DUMMY_HASH_PASSWORD",
    "MIGRATIONS_DIR",
    "DatabaseURLError",
    "StoreUnavailableError",
    "StudyStore",
    "make_engine",
    "png_bytes",
    "resolve_database_url",
    "upgrade_database",
]

log = logging.getLogger(__name__)

#: File name of the default SQLite database inside the data folder.
DB_NAME = "studies.sqlite3"

#: Alembic script directory (``env.py``, ``versions/``), shipped inside the package.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: SQLite busy timeout: how long a writer waits for another one's lock, milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Key of the PostgreSQL advisory lock held while migrating (replicas starting together).
_PG_MIGRATION_LOCK = 0x63787274  # "cxrt"

_FIRST_REVISION = "0001"

#: Verified against a fixed hash when a login names an unknown user, so that
#: unknown and known names take the same time.
DUMMY_HASH_PASSWORD = "not-a-real-password"

_EXAMPLES = "sqlite:///path/to/studies.sqlite3 or postgresql+psycopg://user:password@host:5432/dbname"


class DatabaseURLError(ValueError):
    """A database URL that cannot be used (syntax, unsupported database, missing driver or name)."""


class StoreUnavailableError(RuntimeError):
    """The database could not be reached or migrated when the store opened."""


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (recursively through dicts and lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _json_dumps(obj: Any) -> str:
    """Strict JSON for the JSON columns: NaN and infinities (not JSON, unreadable by SQLite's json functions
    and PostgreSQL) are stored as null."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError:
        log.warning("non-finite number in a JSON column: stored as null")
        return json.dumps(_finite(obj), separators=(",", ":"), allow_nan=False)


def _shown(url: URL | str) -> str:
    return url.render_as_string(hide_password=True) if isinstance(url, URL) else url


def resolve_database_url(database_url: str | None, data_dir: str | Path) -> URL:
    """The URL of the studies database.

    Parameters
    ----------
    database_url : str or None
        SQLAlchemy URL (``sqlite:///FILE`` or ``postgresql+psycopg://user@host:port/db``).
        None or empty: the SQLite file ``studies.sqlite3`` in ``data_dir``.
        ``postgresql://`` without a driver means psycopg 3 (``postgresql+psycopg``).
    data_dir : path
        The data folder.

    Returns
    -------
    sqlalchemy.URL

    Raises
    ------
    DatabaseURLError
        Not a URL, a database other than SQLite or PostgreSQL, an in-memory
        SQLite database (studies would be lost), or a PostgreSQL URL without
        a database name. The message names the problem (password hidden).
    """
    if not database_url:
        return URL.create("sqlite", database=str(Path(data_dir) / DB_NAME))
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise DatabaseURLError(
            f"database URL {database_url.split('@')[-1]!r} is not a URL of the form dialect+driver://user:password@host:port/dbname (e.g. {_EXAMPLES})"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:") or "mode=memory" in str(url.query):
            raise DatabaseURLError(
                f"database URL {_shown(url)!r} is an in-memory SQLite database: studies would be lost at exit; give a file, e.g. sqlite:///path/to/studies.sqlite3"
            )
        return url
    if backend == "postgresql":
        if not url.database:
            raise DatabaseURLError(f"database URL {_shown(url)!r} names no database: add /dbname after the host")
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return url
    raise DatabaseURLError(
        f"database URL {_shown(url)!r}: unsupported database {backend!r}; use SQLite or PostgreSQL ({_EXAMPLES})"
    )


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cur.close()


def make_engine(url: URL) -> Engine:
    """Engine for a URL from :func:`resolve_database_url`.

    SQLite connections are set, on connect, to WAL journal mode,
    ``synchronous=NORMAL`` (a committed study survives a crash or kill of the
    process, not necessarily a power cut) and a busy timeout of
    :data:`SQLITE_BUSY_TIMEOUT_MS` ms. PostgreSQL connections are checked
    before use (``pool_pre_ping``), so a restarted database server is survived.

    Parameters
    ----------
    url : sqlalchemy.URL

    Returns
    -------
    sqlalchemy.Engine

    Raises
    ------
    DatabaseURLError
        The URL's driver is not installed (e.g. ``postgresql+psycopg2`` without psycopg2).
    """
    try:
        if url.get_backend_name() == "sqlite":
            if url.database:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                json_serializer=_json_dumps,
                connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            return engine
        return create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True, pool_size=8, max_overflow=8)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseURLError(
            f"database URL {_shown(url)!r}: driver {url.drivername!r} is not available ({exc}); "
            "for PostgreSQL install psycopg (pip install 'psycopg[binary]') and use postgresql+psycopg://"
        ) from None


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file between processes (a lock file beside it)."""
    db = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not db:
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(f"{db}.migrate-lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade_database(engine: Engine) -> str:
    """Bring the database schema to the newest Alembic revision (``alembic upgrade head``).

    Idempotent. A ``studies`` table made by cxrtriage <= 0.1.0 (hand-written
    SQLite schema, no ``alembic_version`` table) is adopted by stamping the
    first revision, whose schema is the same. Replicas starting together
    are serialised (PostgreSQL advisory lock; a lock file for SQLite).

    Parameters
    ----------
    engine : sqlalchemy.Engine

    Returns
    -------
    str
        The revision the database is at afterwards.

    Raises
    ------
    sqlalchemy.exc.SQLAlchemyError
        The database cannot be reached or a migration failed.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        cfg = _alembic_config(conn)
        tables = set(inspect(conn).get_table_names())
        if "studies" in tables and "alembic_version" not in tables:
            log.info("adopting a studies table made before migrations: stamping revision %s", _FIRST_REVISION)
            command.stamp(cfg, _FIRST_REVISION)
        command.upgrade(cfg, "head")
        rev = MigrationContext.configure(conn).get_current_revision()
    return rev or ""


class StudyStore:
    """Studies in a SQL database, their images on disk.

    Parameters
    ----------
    data_dir : path
        Folder of the images (created if missing) and, by default, of the
        SQLite database ``studies.sqlite3``.
    database_url : str, optional
        SQLAlchemy URL of the database instead (see :func:`resolve_database_url`),
        e.g. ``postgresql+psycopg://cxr@dbhost:5432/cxrtriage`` for several replicas.

    Raises
    ------
    DatabaseURLError
        Unusable ``database_url``.
    StoreUnavailableError
        The database cannot be reached or migrated.

    Notes
    -----
    Opening runs ``alembic upgrade head``. Every method opens its own short
    session from the engine's pool, so the store is safe to share between
    threads. Returned :class:`~cxrtriage.store.models.Study` objects are
    detached copies with all columns loaded. A committed study survives a
    crash or kill of the process (SQLite: WAL journal, ``synchronous=NORMAL``;
    PostgreSQL: commit).
    """

    def __init__(self, data_dir: str | Path, database_url: str | None = None) -> None:
        self.root = Path(data_dir)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "derived").mkdir(parents=True, exist_ok=True)
        self.url: URL = resolve_database_url(database_url, self.root)
        self.db_path: Path | None = (
            Path(self.url.database) if self.url.get_backend_name() == "sqlite" and self.url.database else None
        )
        self.engine: Engine = make_engine(self.url)
        try:
            self.revision = upgrade_database(self.engine)
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise StoreUnavailableError(
                f"database {_shown(self.url)!r}: cannot open or migrate: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
            ) from exc
        self._sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        removed = self.remove_stale_temp_files()
        if removed:
            log.info("removed %d temporary files left by an interrupted write", removed)

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.url.get_backend_name()

    def close(self) -> None:
        """Close the pooled database connections (the store can still reconnect if used again)."""
        self.engine.dispose()

    # -- images ---------------------------------------------------------
    def save_image(self, sha256: str, img: np.ndarray) -> str:
        """Store decoded pixels as PNG, atomically, unless already there.

        Parameters
        ----------
        sha256 : str
            Hex SHA-256 of the decoded pixels (names the file).
        img : numpy.ndarray
            ``uint8 (H, W)`` pixels.

        Returns
        -------
        str
            Path relative to the data folder, ``images/ab/<sha256>.png``.
        """
        rel = f"images/{sha256[:2]}/{sha256}.png"
        dst = self.root / rel
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            Image.fromarray(img).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, dst)
        return rel

    def load_image(self, rel: str) -> np.ndarray:
        """Pixels ``uint8 (H, W)`` of a stored image (``rel`` relative to the data folder).

        Raises
        ------
        FileNotFoundError
            The image file is missing.
        """
        with Image.open(self.root / rel) as im:
            return np.asarray(im.convert("L"))

    def derived_path(self, study_id: str, kind: str, suffix: str = ".png") -> Path:
        """Cache file of a rendered picture (``kind``: annotated, heatmap, image) or report (``suffix`` ``.pdf``)."""
        return self.root / "derived" / f"{study_id}-{kind}{suffix}"

    def write_derived(self, study_id: str, kind: str, png: bytes, suffix: str = ".png") -> Path:
        """Write a rendered file (bytes) atomically and return its path."""
        dst = self.derived_path(study_id, kind, suffix)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, dst)
        return dst

    def remove_stale_temp_files(self, older_than_s: float = 600.0) -> int:
        """Delete ``.*.tmp`` files under ``images/`` and ``derived/`` left by a crashed writer.

        Only files older than ``older_than_s`` seconds are removed, so a write in
        progress in another process sharing the folder is left alone.

        Returns
        -------
        int
            Number of files removed.
        """
        import time

        cutoff = time.time() - older_than_s
        n = 0
        for sub in ("images", "derived"):
            for f in (self.root / sub).rglob(".*.tmp"):
                try:
                    if f.is_file() and f.stat().st_mtime < cutoff:
                        f.unlink()
                        n += 1
                except OSError:
                    pass
        return n

    # -- rows -----------------------------------------------------------
    def get(self, study_id: str) -> Study | None:
        """The study with this id, or None."""
        with self._sessions() as s:
            return s.get(Study, study_id)

    def find(self, sha256: str, model_set: str) -> Study | None:
        """The study of an image already analysed by this set of models, or None.

        Parameters
        ----------
        sha256 : str
            :attr:`Study.sha256` of the decoded pixels.
        model_set : str
            :attr:`Study.model_set`, the key of the set of model versions.
        """
        with self._sessions() as s:
            return s.scalars(select(Study).where(Study.sha256 == sha256, Study.model_set == model_set)).one_or_none()

    def insert(self, study: Study) -> tuple[Study, bool]:
        """Insert a study and its model results (one transaction); if the same image was stored meanwhile, return that one.

        Parameters
        ----------
        study : Study
            A new (transient) study, its :attr:`Study.results` attached.

        Returns
        -------
        (study, inserted) : (Study, bool)
            ``inserted`` is False when a study with the same
            ``(sha256, model_set)`` existed (another request or replica
            stored it first): that study is returned instead, nothing is written.

        Raises
        ------
        RuntimeError
            The insert violated a constraint but no study with the same
            ``(sha256, model_set)`` exists (an id collision).
        """
        with self._sessions() as s:
            s.add(study)
            try:
                s.commit()
                return study, True
            except IntegrityError:
                s.rollback()
        existing = self.find(study.sha256, study.model_set)
        if existing is None:
            raise RuntimeError(f"study {study.id}: id collision")
        return existing, False

    def update_report(self, study_id: str, report: dict[str, Any]) -> None:
        """Store a new version of a study's report; status and sign-off columns follow it.

        Parameters
        ----------
        study_id : str
        report : dict
            Report with ``status`` and, when signed, ``signed_by``/``signed_at``.

        Raises
        ------
        KeyError
            No study with this id.
        """
        with self._sessions() as s:
            res = s.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(
                    report=report,
                    report_status=report["status"],
                    signed_by=report.get("signed_by"),
                    signed_at=report.get("signed_at"),
                )
            )
            s.commit()
        if getattr(res, "rowcount", 1) == 0:
            raise KeyError(study_id)

    def count(self) -> int:
        """Number of stored studies."""
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Study)) or 0)

    def recent(self, limit: int = 20, offset: int = 0) -> list[Study]:
        """Studies newest first (by ``received_at``, then id), ``limit`` of them after skipping ``offset``."""
        with self._sessions() as s:
            q = select(Study).order_by(Study.received_at.desc(), Study.id).limit(limit).offset(offset)
            return list(s.scalars(q))

    # -- users and audit log ----------------------------------------------
    def add_user(self, username: str, password: str, role: str) -> User:
        """Create a user with an Argon2id password hash.

        Parameters
        ----------
        username : str
            1-64 characters of ``[A-Za-z0-9._@-]``.
        password : str
            At least 8 characters.
        role : {"uploader", "radiologist"}

        Returns
        -------
        User

        Raises
        ------
        UserError
            Bad name, password or role, or the user exists already.
        """
        check_username(username)
        if role not in ROLES:
            raise UserError(f"role {role!r}: one of {', '.join(ROLES)} expected")
        user = User(username=username, password_hash=hash_password(password), role=role, created_at=utc_now())
        with self._sessions() as s:
            s.add(user)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                raise UserError(f"user {username!r} exists already") from None
        return user

    def remove_user(self, username: str) -> None:
        """Delete a user (their audit rows stay). :class:`UserError` when there is no such user."""
        with self._sessions() as s:
            user = s.get(User, username)
            if user is None:
                raise UserError(f"no user {username[:70]!r}")
            s.delete(user)
            s.commit()

    def users(self) -> list[User]:
        """All users, by name."""
        with self._sessions() as s:
            return list(s.scalars(select(User).order_by(User.username)))

    def user_count(self) -> int:
        """Number of users."""
        with self._sessions() as s:
            return int(s.scalar(select(func.count()).select_from(User)) or 0)

    def get_user(self, username: str) -> User | None:
        """The user of this name, or None."""
        if not isinstance(username, str) or len(username) > 64:
            return None
        with self._sessions() as s:
            return s.get(User, username)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else None (unknown names cost one hash check too)."""
        user = self.get_user(username)
        if user is None:
            verify_password(_dummy_hash(), password)
            return None
        return user if verify_password(user.password_hash, password) else None

    def audit(self, username: str | None, action: str, study_id: str | None = None, detail: str | None = None) -> None:
        """Append one row to the audit log (who, what, which study, when)."""
        ev = AuditEvent(
            at=utc_now(),
            username=username[:64] if username else None,
            action=action[:32],
            study_id=study_id[:32] if study_id else None,
            detail=detail[:200] if detail else None,
        )
        with self._sessions() as s:
            s.add(ev)
            s.commit()

    def audit_log(self, limit: int = 100, study_id: str | None = None) -> list[AuditEvent]:
        """Newest audit rows first, optionally of one study."""
        with self._sessions() as s:
            q = select(AuditEvent)
            if study_id is not None:
                q = q.where(AuditEvent.study_id == study_id)
            return list(s.scalars(q.order_by(AuditEvent.id.desc()).limit(limit)))

    def ping(self) -> bool:
        """True when the database answers ``SELECT 1``."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(DUMMY_HASH_PASSWORD))
    return _DUMMY_HASH[0]


def png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    """Encode a PIL image as PNG bytes (``compress_level`` 0-9; default fast)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()
