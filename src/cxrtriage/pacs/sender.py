"""Deliver the outbox to the PACS by C-STORE (pynetdicom SCU), with retries and exponential back-off."""

from __future__ import annotations

import io
import logging
import threading

from cxrtriage.pacs.settings import Destination
from cxrtriage.store import Outbox, OutboxItem

__all__ = ["Sender", "SUCCESS_STATUSES"]

log = logging.getLogger(__name__)

#: C-STORE statuses meaning the PACS kept the object: success and the warnings of PS3.4 B.2.3
#: (coercion of data elements 0xB000, elements discarded 0xB006, data set does not match SOP class 0xB007).
SUCCESS_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


class Sender:
    """A background thread sending due outbox rows of one destination.

    Parameters
    ----------
    outbox : Outbox
    destination : Destination
    calling_ae : str
        Our AE title on outgoing associations.
    retry_base_s, retry_max_s : float
        Back-off after a failed attempt: ``min(retry_base_s * 2**attempts, retry_max_s)`` seconds.
    batch : int
        Objects per association.
    poll_s : float
        Longest sleep between two looks at the outbox when not woken by :meth:`wake`, seconds.
    timeout_s : float
        ACSE, DIMSE and network timeouts, seconds.

    Notes
    -----
    A row is marked sent only after the PACS answered a success or warning
    status; any other outcome (no association, a refused object, a dropped
    connection) schedules another attempt, so nothing is lost while the PACS is
    down, and the rows are delivered in order once it is back.
    """

    def __init__(
        self,
        outbox: Outbox,
        destination: Destination,
        calling_ae: str,
        *,
        retry_base_s: float = 2.0,
        retry_max_s: float = 300.0,
        batch: int = 16,
        poll_s: float = 5.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.outbox, self.destination, self.calling_ae = outbox, destination, calling_ae
        self.retry_base_s, self.retry_max_s = retry_base_s, retry_max_s
        self.batch, self.poll_s, self.timeout_s = batch, poll_s, timeout_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sending thread (daemon)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cxrtriage-pacs-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the association in progress (unsent rows stay in the outbox)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the outbox now (new rows were queued)."""
        self._wake.set()

    def _backoff(self, attempts: int) -> float:
        return min(self.retry_base_s * (2.0 ** min(attempts, 30)), self.retry_max_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent_any = self.send_due()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the sender
                log.exception("outbox sender: unexpected error; retrying")
                sent_any = False
            if not sent_any:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    def send_due(self) -> bool:
        """Send one batch of due rows; True when a batch was attempted (more may be due)."""
        items = self.outbox.claim(str(self.destination), self.batch, lease_s=max(60.0, 4 * self.timeout_s))
        if not items:
            return False
        self._send(items)
        return True

    def _fail(self, item: OutboxItem, reason: str) -> None:
        wait = self._backoff(item.attempts)
        log.warning(
            "sending %s %s (study %s) to %s failed (attempt %d): %s; retry in %.1f s",
            item.kind,
            item.sop_instance_uid,
            item.study_id,
            self.destination,
            item.attempts + 1,
            reason,
            wait,
        )
        self.outbox.mark_failed(item.id, reason, wait)

    def _send(self, items: list[OutboxItem]) -> None:
        from pydicom import dcmread
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        for sop_class in sorted({i.sop_class_uid for i in items}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        d = self.destination
        try:
            assoc = ae.associate(d.host, d.port, ae_title=d.ae_title)
        except Exception as exc:  # noqa: BLE001 - e.g. name resolution; the rows wait for the next attempt
            for it in items:
                self._fail(it, f"association failed ({exc.__class__.__name__}: {exc})")
            return
        if not assoc.is_established:
            why = "association rejected" if assoc.is_rejected else "association aborted or PACS unreachable"
            for it in items:
                self._fail(it, why)
            return
        try:
            for n, it in enumerate(items):
                if not assoc.is_established:
                    for rest in items[n:]:
                        self._fail(rest, "association lost")
                    return
                try:
                    ds = dcmread(io.BytesIO(it.dataset or b""))
                    status = assoc.send_c_store(ds)
                except Exception as exc:  # noqa: BLE001 - a row that cannot be read or sent is retried, not lost
                    self._fail(it, f"{exc.__class__.__name__}: {exc}")
                    continue
                code = int(getattr(status, "Status", -1)) if status else -1
                if code in SUCCESS_STATUSES:
                    self.outbox.mark_sent(it.id)
                    log.info("sent %s %s (study %s) to %s", it.kind, it.sop_instance_uid, it.study_id, d)
                else:
                    self._fail(it, f"C-STORE status 0x{code:04X}" if code >= 0 else "no C-STORE response")
        finally:
            if assoc.is_established:
                assoc.release()
