"""Server settings (``cxr serve`` options)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServeSettings", "TOKEN_ENV"]

#: Environment variable holding the API token for write endpoints.
TOKEN_ENV = "CXRTRIAGE_API_TOKEN"


@dataclass
class ServeSettings:
    """Settings of one server.

    Attributes
    ----------
    model_dir : pathlib.Path
        Model bundle folder (``config.json`` + ``model.safetensors`` + ``bundle.json``, optionally ``model.onnx``, ``ood.npz``).
    data_dir : pathlib.Path
        Where the images live, and the SQLite database ``studies.sqlite3``
        unless ``database_url`` is given.
    database_url : str or None
        SQLAlchemy URL of the studies database, e.g.
        ``postgresql+psycopg://user:password@host:5432/cxrtriage`` (several
        replicas may share one); None: SQLite file ``studies.sqlite3`` in
        ``data_dir``. Migrated (Alembic) at start-up.
    host, port : str, int
        Listening address (also used for the QR code URL).
    max_upload_mb : float
        Largest accepted upload, MB (10^6 bytes); larger -> 413.
    max_pixels : int
        Decompression-bomb guard: more pixels -> 422.
    api_token : str or None
        Token for write endpoints (report sign-off), sent as header
        ``X-API-Token`` or ``Authorization: Bearer <token>``; default from
        ``$CXRTRIAGE_API_TOKEN``, else a random one printed at start-up.
    threads : int
        Inference threads (ONNX Runtime intra-op / torch).
    prefer_onnx : bool
        Serve with ONNX Runtime when possible (export ``model.onnx`` on start if missing and writable).
    reject_ood : bool
        Refuse non-radiographs (colour check + Mahalanobis detector when fitted).
    """

    model_dir: Path
    data_dir: Path
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 20.0
    max_pixels: int = 50_000_000
    api_token: str | None = None
    threads: int = 2
    prefer_onnx: bool = True
    reject_ood: bool = True
    token_generated: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        self.data_dir = Path(self.data_dir)
        if not self.api_token:
            self.api_token = os.environ.get(TOKEN_ENV) or None
        if not self.api_token:
            self.api_token = secrets.token_urlsafe(18)
            self.token_generated = True

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1_000_000)
