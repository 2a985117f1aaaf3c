"""Settings of ``cxr listen`` (the DICOM Storage SCP and its result sender)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxrtriage.serve.settings import ServeSettings

__all__ = ["Destination", "ListenSettings", "check_ae_title"]

_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # PS3.5 6.2: AE, 16 characters, no backslash or control characters


def check_ae_title(ae: str, what: str = "AE title") -> str:
    """``ae`` stripped, if a valid Application Entity title (PS3.5 6.2: 1-16 characters, no ``\\``).

    Raises
    ------
    ValueError
        Empty, longer than 16 characters, or with a backslash or control character.
    """
    s = ae.strip()
    if not _AE.fullmatch(s or "\n"):
        raise ValueError(f"{what} {ae!r}: 1-16 printable characters without a backslash expected (DICOM PS3.5 6.2)")
    return s


@dataclass(frozen=True)
class Destination:
    """A DICOM peer to send to: ``AE@host:port``.

    Attributes
    ----------
    ae_title : str
        Called AE title (1-16 characters).
    host : str
        Host name or IP address.
    port : int
        TCP port, 1-65535.
    """

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AE@host:port`` (e.g. ``ORTHANC@pacs.example.org:4242``).

        Raises
        ------
        ValueError
            Not of that form, a bad AE title or a port outside 1-65535.
        """
        m = re.fullmatch(r"([^@]+)@(\[[0-9a-fA-F:]+\]|[^:@\s]+):(\d{1,5})", text.strip())
        if not m:
            raise ValueError(f"destination {text!r}: AE@host:port expected, e.g. ORTHANC@127.0.0.1:4242")
        port = int(m.group(3))
        if not 1 <= port <= 65535:
            raise ValueError(f"destination {text!r}: port {port} outside 1-65535")
        return cls(check_ae_title(m.group(1), "destination AE title"), m.group(2).strip("[]"), port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass
class ListenSettings:
    """Settings of one DICOM listener.

    Attributes
    ----------
    service : ServeSettings
        Model, data folder, database, decode limits and gates: the same as ``cxr serve``
        (one code path, :class:`~cxrtriage.serve.service.StudyService`).
    ae_title : str
        Our AE title (called AE title of incoming associations, calling AE title of outgoing ones).
    host, port : str, int
        Listening address; port 0 picks a free one (tests).
    allowed_calling : tuple of str
        Calling AE titles allowed to send (associations from others are rejected); empty: any.
    return_to : Destination or None
        Where results (SR + heatmap Secondary Capture) are sent; None: analyse and store only.
    retry_base_s, retry_max_s : float
        Back-off after a failed send: ``min(retry_base_s * 2**attempts, retry_max_s)`` seconds.
    send_batch : int
        Objects sent per association.
    poll_s : float
        How often the sender looks for due objects when not woken up, seconds.
    network_timeout_s : float
        ACSE/DIMSE/network timeouts of outgoing associations, seconds.
    """

    service: ServeSettings
    ae_title: str = "CXRTRIAGE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling: tuple[str, ...] = field(default_factory=tuple)
    return_to: Destination | None = None
    retry_base_s: float = 2.0
    retry_max_s: float = 300.0
    send_batch: int = 16
    poll_s: float = 5.0
    network_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.ae_title = check_ae_title(self.ae_title)
        self.allowed_calling = tuple(check_ae_title(a, "allowed calling AE title") for a in self.allowed_calling)
        if isinstance(self.return_to, str):
            self.return_to = Destination.parse(self.return_to)
