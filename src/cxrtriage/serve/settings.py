"""Server settings (``cxr serve`` options)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ServeSettings",
    "NotifySettings",
    "all_shipped_model_dirs",
    "SECRET_ENV",
    "SECRET_FILE",
    "INITIAL_USER_ENV",
    "INITIAL_PASSWORD_ENV",
]

#: Environment variable holding the key that signs session cookies and QR upload links.
SECRET_ENV = "CXRTRIAGE_SECRET_KEY"

#: File in the data folder holding a generated signing key (mode 0600) when ``$CXRTRIAGE_SECRET_KEY`` is unset.
SECRET_FILE = ".secret_key"

#: With :data:`INITIAL_PASSWORD_ENV`: a radiologist account created at start-up when there is no user yet.
INITIAL_USER_ENV = "CXRTRIAGE_INITIAL_USER"
INITIAL_PASSWORD_ENV = "CXRTRIAGE_INITIAL_PASSWORD"


def all_shipped_model_dirs() -> tuple[Path, ...]:
    """Folders of every shipped model (``cxrtriage/zoo``), the default model first, then by name.

    Raises
    ------
    cxrtriage.models.bundle.ModelLoadError
        No model is shipped.
    """
    from cxrtriage.models.bundle import ModelLoadError, default_model_dir, shipped_models, zoo_dir

    dirs = [zoo_dir() / n for n in shipped_models()]
    if not dirs:
        raise ModelLoadError(f"{zoo_dir()}: no shipped model; give one with --model")
    default = default_model_dir()
    return tuple(sorted(dirs, key=lambda d: (d != default, d.name)))


@dataclass
class NotifySettings:
    """Critical-finding notifications (:mod:`cxrtriage.serve.notify`).

    Attributes
    ----------
    threshold : float or None
        A new study whose AI priority (calibrated probability of a finding, in [0, 1]) is at or above
        this is critical and notified; None: no notifications.
    webhook_url : str or None
        ``http(s)://`` address that receives a JSON POST per critical study (header ``Idempotency-Key``).
    smtp_host : str or None
        SMTP server for e-mail notifications (``host`` or ``host:port``, port 25 by default); None: no e-mail.
    email_from : str
        Sender address.
    email_to : tuple of str
        Recipients (e-mail is sent only when non-empty and ``smtp_host`` is set).
    max_attempts : int
        Attempts per notification before it is marked ``failed`` (each logged).
    backoff_s : float
        Delay before the second attempt, seconds; doubled after each failure (exponential backoff).
    max_backoff_s : float
        Longest delay between attempts, seconds.
    poll_s : float
        How often the sender looks for due notifications, seconds.
    timeout_s : float
        Timeout of one delivery attempt, seconds.
    """

    threshold: float | None = None
    webhook_url: str | None = None
    smtp_host: str | None = None
    email_from: str = "cxrtriage@localhost"
    email_to: tuple[str, ...] = ()
    max_attempts: int = 20
    backoff_s: float = 2.0
    max_backoff_s: float = 600.0
    poll_s: float = 1.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"notification threshold must lie in [0, 1], got {self.threshold}")
        if self.webhook_url and not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"notification webhook {self.webhook_url[:80]!r}: an http:// or https:// URL expected")
        if self.max_attempts < 1 or self.backoff_s <= 0 or self.poll_s <= 0:
            raise ValueError("notification max_attempts >= 1, backoff_s > 0 and poll_s > 0 expected")
        self.email_to = tuple(self.email_to)

    @property
    def channels(self) -> tuple[str, ...]:
        """The configured channels: ``webhook`` and/or ``email`` (empty without a threshold)."""
        if self.threshold is None:
            return ()
        out = ("webhook",) if self.webhook_url else ()
        return out + (("email",) if self.smtp_host and self.email_to else ())


@dataclass
class ServeSettings:
    """Settings of one server.

    Attributes
    ----------
    model_dir : pathlib.Path or None
        One model bundle folder (``config.json``, ``bundle.json``, ``model.onnx`` written by ``cxr export``,
        optionally ``ood.npz``; the server runs ``model.onnx`` in ONNX Runtime, never PyTorch): shorthand for
        ``model_dirs=(model_dir,)``. After construction it is the first of ``model_dirs``.
    data_dir : pathlib.Path
        Where the images live, and the SQLite database ``studies.sqlite3``
        unless ``database_url`` is given.
    database_url : str or None
        SQLAlchemy URL of the studies database, e.g.
        ``postgresql+psycopg://user:password@host:5432/cxrtriage`` (several
        replicas may share one); None: SQLite file ``studies.sqlite3`` in
        ``data_dir``. Migrated (Alembic) at start-up. Users and the audit log live there too.
    host, port : str, int
        Listening address (also used for the QR code URL).
    max_upload_mb : float
        Largest accepted upload, MB (10^6 bytes); larger -> 413.
    max_pixels : int
        Largest accepted image, pixels (checked from the file header before any
        decoding); more -> 422. The default, 36 MP, is above the largest
        detectors in use (43 x 43 cm at 0.1 mm = 18.5 MP) with margin.
    max_decoded_mb : float
        Memory budget of one decode, MB: refuse an upload whose decoded
        samples (rows x columns x bytes per sample; for deflated DICOM the
        inflated data set) would exceed it, before decoding.
    max_concurrent_decodes : int
        Decodes running at the same time (threads of the decode pool);
        further uploads wait in its queue, so decode memory is about this many budgets.
    secret_key : str or None
        Key signing the session cookies and the QR upload links
        (``itsdangerous``). Default ``$CXRTRIAGE_SECRET_KEY``, else a random
        key kept in ``DATA_DIR/.secret_key`` (mode 0600). Replicas behind one
        address need the same key.
    session_hours : float
        Lifetime of a login session (signed cookie), hours.
    upload_link_minutes : float
        Lifetime of the upload link in the page's QR code, minutes.
    https_only : bool
        Mark the session cookie ``Secure`` (set when a TLS reverse proxy is in front).
    upload_quota_per_hour : int
        Uploads one user may send per hour (sliding window, in memory); more -> 429. 0: no quota.
    release_memory_every : int
        After this many analysed uploads, hand the memory freed inside the C heap back to the system
        (:func:`cxrtriage.serve.memory.release_free_memory`, about a millisecond); 0: never.
    threads : int
        ONNX Runtime intra-op threads of each model (the lung segmenter has ``segmenter_threads``). Default 1:
        every network has its own worker thread, so the models of one upload already run side by side on the
        cores; two threads per network made a lone upload slower on 2 cores (p95 58-78 ms against 47-55 ms,
        and fewer uploads/s at 16 clients; ``benchmarks/results/serve_batching*.json``).
    gate_threads : int
        ONNX Runtime intra-op threads of the gates' feature extractor (:class:`cxrtriage.ood.gate.GateFeatures`).
    segmenter_threads : int
        ONNX Runtime intra-op threads of the lung segmenter. Default 1: although an upload's segmentation runs
        alone between the gates and the models, two threads made it slower in the server on 2 cores (one
        client: p95 26-30 ms against 24 ms; 16 clients: 12.7 against 14.3 uploads/s;
        ``benchmarks/results/segment_2026-12-08_*.json``, ``serve_batching_2026-12-08_*.json``).
    max_batch : int
        Micro-batching across requests (:mod:`cxrtriage.serve.batching`): most uploads sharing one ONNX Runtime
        call of each network (gates' features, lung segmenter, each classifier); 1: each upload alone.
    max_wait_ms : float
        Longest wait of a network's worker for more uploads once it has one, milliseconds; waited only while
        its previous call had several (a lone client never waits). 0: take what is queued and go.
    batch_queue : int
        Most uploads waiting for one network; beyond, the upload is refused with 503 ``busy`` and
        ``Retry-After`` (back-pressure: memory stays bounded).
    notify : NotifySettings
        Critical-finding notifications (webhook, e-mail); off by default.
    cxr_gate : bool
        Gate 1: refuse images that are not chest radiographs (``not_a_chest_radiograph``: colour check and the
        gate-1 detector, independent of any model).
    population_gate : bool
        Gate 2: mark each model's result ``applicable=False`` with a warning when the image lies outside the
        population that model was validated on; ``outside_population`` (422) only when no model applies.
        Off: every result is marked applicable.
    lung_segmenter : bool
        Segment the lung fields of every upload with the shipped segmenter (ONNX Runtime): the study's lung
        area and failure flag, each heatmap's share inside the lungs, the lung contour picture. Models declaring
        ``input: lungs | lung-crop`` get their lung step from the same mask whatever this says.
    segmenter_dir : pathlib.Path or None
        Another lung segmenter folder (:class:`cxrtriage.segment.bundle.SegmenterBundle`) instead of the shipped
        one, e.g. to compare a candidate in the server.
    model_dirs : tuple of pathlib.Path
        The models run on every upload, in display order. Empty (and no ``model_dir``): every shipped model
        (:func:`cxrtriage.models.bundle.shipped_models`), the default model first.
    dicom_return_to : str or None
        ``AE@host:port`` of the PACS that receives the SR and heatmap of each instance stored by DICOMweb
        STOW-RS (queued in the outbox; ``cxr serve --return-to`` also starts the sender). None: not sent.
    dicom_ae_title : str
        Our AE title on the associations that send them.
    """

    model_dir: Path | None
    data_dir: Path
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 20.0
    max_pixels: int = 36_000_000
    max_decoded_mb: float = 256.0
    max_concurrent_decodes: int = 2
    secret_key: str | None = None
    session_hours: float = 12.0
    upload_link_minutes: float = 15.0
    https_only: bool = False
    upload_quota_per_hour: int = 2000
    release_memory_every: int = 50
    threads: int = 1
    gate_threads: int = 1
    segmenter_threads: int = 1
    max_batch: int = 16
    max_wait_ms: float = 0.0
    batch_queue: int = 32
    cxr_gate: bool = True
    population_gate: bool = True
    lung_segmenter: bool = True
    segmenter_dir: Path | None = None
    model_dirs: tuple[Path, ...] = ()
    notify: NotifySettings = field(default_factory=NotifySettings)
    dicom_return_to: str | None = None
    dicom_ae_title: str = "CXRTRIAGE"

    def __post_init__(self) -> None:
        if self.model_dirs:
            self.model_dirs = tuple(Path(d) for d in self.model_dirs)
        elif self.model_dir is not None:
            self.model_dirs = (Path(self.model_dir),)
        else:
            self.model_dirs = all_shipped_model_dirs()
        self.model_dir = self.model_dirs[0]
        self.data_dir = Path(self.data_dir)
        if min(self.threads, self.gate_threads, self.segmenter_threads) < 1:
            raise ValueError(
                f"threads, gate_threads and segmenter_threads >= 1 expected, got {self.threads}, "
                f"{self.gate_threads}, {self.segmenter_threads}"
            )
        if self.max_batch < 1 or self.batch_queue < 1 or self.max_wait_ms < 0:
            raise ValueError(
                f"max_batch >= 1, batch_queue >= 1 and max_wait_ms >= 0 expected, got {self.max_batch}, "
                f"{self.batch_queue}, {self.max_wait_ms}"
            )
        if not self.secret_key:
            self.secret_key = os.environ.get(SECRET_ENV) or None

    @property
    def max_upload_bytes(self) -> int:
        """``max_upload_mb`` in bytes."""
        return int(self.max_upload_mb * 1_000_000)

    @property
    def max_decoded_bytes(self) -> int:
        """``max_decoded_mb`` in bytes."""
        return int(self.max_decoded_mb * 1_000_000)

    def signing_key(self) -> str:
        """The session/upload-link signing key: ``secret_key``, else the data folder's key file (created once).

        Returns
        -------
        str
            At least 32 random URL-safe characters when generated.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / SECRET_FILE
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_text().strip()
            if key:
                self.secret_key = key
                return key
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        key = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        self.secret_key = key
        return key
