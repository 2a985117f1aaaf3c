"""Critical-finding notifications: a webhook POST and optional e-mail, at least once, from a persistent outbox.

When a new study's AI priority (calibrated probability of a finding) reaches the configured threshold
(:class:`cxrtriage.serve.settings.NotifySettings`), one row per channel is written to the store's
``notifications`` table (:meth:`cxrtriage.store.StudyStore.add_notification`) with the idempotency key
``<study_id>:<channel>``. A background thread delivers due rows and records each attempt: on failure the
next attempt is scheduled with exponential backoff (``backoff_s * 2**(attempts - 1)``, at most
``max_backoff_s``); after ``max_attempts`` the row is ``failed``. Every outcome is logged and written
to the audit log (action ``notify``).

Delivery is **at least once**: a row becomes ``delivered`` only after the receiver's 2xx answer (or the
SMTP server's acceptance), so a restart of the server, or an outage of the receiver, delays but never
loses a notification. A crash between the receiver's answer and the store's update, or two replicas
picking the same row, can deliver it twice: receivers drop repeats by the ``Idempotency-Key`` header
(webhook) or the ``Message-ID`` (e-mail), both derived from the key.

Payloads carry no patient data: the study id, the AI label, priority, flags and the study page's address.
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from typing import Any

from cxrtriage import DISCLAIMER
from cxrtriage.serve.settings import NotifySettings
from cxrtriage.store import Notification, Study, StudyStore

__all__ = ["Notifier", "critical_priority", "USER_AGENT"]

log = logging.getLogger(__name__)

USER_AGENT = "cxrtriage-notify/1"


def critical_priority(study: Study) -> float | None:
    """The AI priority of a study (:attr:`cxrtriage.store.Study.priority`: the highest calibrated probability
    of a finding over the applicable models), or None when unknown.

    Returns
    -------
    float or None
        In [0, 1].
    """
    return None if study.priority is None else float(study.priority)


class Notifier:
    """Queue and deliver critical-finding notifications.

    Parameters
    ----------
    store : StudyStore
        Holds the outbox (``notifications``) and the audit log.
    settings : NotifySettings
    public_url : str
        Base address of the server (the payload links the study page).

    Notes
    -----
    :meth:`start` runs the sender thread; :meth:`deliver_due` is one pass (tests call it directly).
    """

    def __init__(self, store: StudyStore, settings: NotifySettings, public_url: str = "") -> None:
        self.store = store
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """True when a threshold and at least one channel are configured."""
        return bool(self.settings.channels)

    # -- queue ------------------------------------------------------------
    def payload(self, study: Study, priority: float) -> dict[str, Any]:
        """The JSON body of a study's notification (no patient data)."""
        return {
            "event": "critical_finding",
            "study_id": study.id,
            "received_at": study.received_at,
            "priority": round(priority, 6),
            "threshold": self.settings.threshold,
            "triage": study.triage,
            "models": [
                {
                    "name": r.model_name,
                    "version": r.model_version,
                    "label": r.label,
                    "flag": r.flag,
                    "priority": round(r.priority, 6),
                    "applicable": r.applicable,
                }
                for r in study.results
            ],
            "page_url": f"{self.public_url}/studies/{study.id}",
            "disclaimer": DISCLAIMER,
        }

    def enqueue(self, study: Study) -> int:
        """Queue the notifications of a new study if it is critical.

        Parameters
        ----------
        study : Study

        Returns
        -------
        int
            Rows queued now (0 when not critical, notifications are off, or they were queued before).
        """
        if not self.enabled:
            return 0
        prio = critical_priority(study)
        threshold = self.settings.threshold
        if prio is None or threshold is None or prio < threshold:
            return 0
        body = self.payload(study, prio)
        n = sum(self.store.add_notification(f"{study.id}:{ch}", study.id, ch, body) for ch in self.settings.channels)
        if n:
            log.info(
                "critical study %s (priority %.3f >= %.3f): %d notification(s) queued", study.id, prio, threshold, n
            )
            self._wake.set()
        return n

    # -- deliver ----------------------------------------------------------
    def _send_webhook(self, row: Notification) -> None:
        url = self.settings.webhook_url
        if not url:
            raise RuntimeError("no webhook URL configured")
        req = urllib.request.Request(
            url,
            data=json.dumps(row.payload).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": row.key, "User-Agent": USER_AGENT},
        )
        with urllib.request.urlopen(req, timeout=self.settings.timeout_s) as resp:  # noqa: S310 - configured URL
            if not 200 <= resp.status < 300:
                raise RuntimeError(f"HTTP {resp.status}")

    def _send_email(self, row: Notification) -> None:
        host, _, port = (self.settings.smtp_host or "").partition(":")
        p = row.payload
        msg = EmailMessage()
        msg["Subject"] = f"cxrtriage: critical finding flagged, study {p['study_id']} (priority {p['priority']:.2f})"
        msg["From"] = self.settings.email_from
        msg["To"] = ", ".join(self.settings.email_to)
        msg["Message-ID"] = f"<{row.key.replace(':', '.')}@cxrtriage>"
        labels = ", ".join(f"{m['name']}: {m['label']}" for m in p.get("models", []))
        msg.set_content(
            f"The AI flagged study {p['study_id']} (priority {p['priority']:.3f}, threshold {p['threshold']}; "
            f"{labels}).\nOpen it: {p['page_url']}\n\n{DISCLAIMER}\n"
        )
        with smtplib.SMTP(host, int(port or 25), timeout=self.settings.timeout_s) as smtp:
            smtp.send_message(msg)

    def _retry_delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1`` after ``attempts`` failures (exponential, capped)."""
        return float(min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** max(0, attempts - 1)))

    def deliver_due(self) -> int:
        """One pass over the due notifications: try each once and record the outcome.

        Returns
        -------
        int
            Notifications delivered in this pass.
        """
        done = 0
        for row in self.store.due_notifications():
            try:
                if row.channel == "webhook":
                    self._send_webhook(row)
                elif row.channel == "email":
                    self._send_email(row)
                else:
                    raise RuntimeError(f"unknown channel {row.channel!r}")
            except (OSError, urllib.error.URLError, smtplib.SMTPException, RuntimeError, ValueError) as exc:
                attempts = row.attempts + 1
                error = f"{exc.__class__.__name__}: {exc}"[:200]
                if attempts >= self.settings.max_attempts:
                    self.store.notification_attempted(row.id, delivered=False, error=error)
                    log.error("notification %s failed after %d attempts: %s", row.key, attempts, error)
                    self.store.audit(None, "notify", row.study_id, f"{row.channel} failed: {error}")
                else:
                    delay = self._retry_delay(attempts)
                    self.store.notification_attempted(
                        row.id, delivered=False, error=error, retry_at=time.time() + delay
                    )
                    log.warning(
                        "notification %s attempt %d failed (%s); retry in %.1f s", row.key, attempts, error, delay
                    )
                continue
            self.store.notification_attempted(row.id, delivered=True)
            self.store.audit(None, "notify", row.study_id, f"{row.channel} delivered (attempt {row.attempts + 1})")
            log.info("notification %s delivered (attempt %d)", row.key, row.attempts + 1)
            done += 1
        return done

    # -- background thread ------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_due()
            except Exception:  # noqa: BLE001 - the sender must outlive a database hiccup; the rows stay pending
                log.exception("notification sender: pass failed; retrying")
            self._wake.wait(self.settings.poll_s)
            self._wake.clear()

    def start(self) -> None:
        """Start the sender thread (no-op when notifications are off or it runs already)."""
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cxrtriage-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the sender thread; pending notifications stay in the store for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
