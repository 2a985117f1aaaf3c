"""Critical-finding notifications against real receivers: a loopback HTTP server and an aiosmtpd SMTP server.

Across a receiver outage, a receiver that answers 500 once, and a restart of the sender (a new store and
notifier on the same database), every critical study is received, and exactly once after the receiver
drops repeats by the ``Idempotency-Key`` header (delivery is at least once).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cxrtriage.serve.notify import Notifier
from cxrtriage.serve.settings import NotifySettings
from cxrtriage.serve.testing import free_port
from cxrtriage.store import Study, StudyStore
from test_store import make_study


def _study(i: int, p_finding: float) -> Study:
    flagged = p_finding >= 0.5
    return make_study(
        i,
        priority=p_finding,
        flag=flagged,
        triage="finding" if flagged else "no_finding",
        label="PNEUMONIA" if flagged else "NORMAL",
        probabilities={"NORMAL": 1 - p_finding, "PNEUMONIA": p_finding},
    )


class Receiver:
    """A webhook receiver on a fixed loopback port that can be stopped and started again."""

    def __init__(self, port: int, fail_first: int = 0) -> None:
        self.port = port
        self.deliveries: list[tuple[str, dict]] = []  # every POST, repeats included
        self.fail_first = fail_first
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.deliveries.append((self.headers["Idempotency-Key"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def unique(self) -> dict[str, dict]:
        """Deliveries after dropping repeats by idempotency key (what the receiver acts on)."""
        return {k: b for k, b in self.deliveries}


def _wait(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def _settings(port: int, **kw) -> NotifySettings:
    return NotifySettings(
        threshold=0.7, webhook_url=f"http://127.0.0.1:{port}/hook", backoff_s=0.05, max_backoff_s=0.3, poll_s=0.05, **kw
    )


def test_webhook_exactly_once_per_critical_study_across_outage_and_restart(tmp_path: Path):
    port = free_port()
    receiver = Receiver(port, fail_first=1)
    store = StudyStore(tmp_path / "data")
    notifier = Notifier(store, _settings(port), "http://cxr.example")
    studies = [_study(1, 0.95), _study(2, 0.2), _study(3, 0.71), _study(4, 0.69)]
    for st in studies[:2]:
        store.insert(st)
        notifier.enqueue(st)
    assert notifier.enqueue(studies[0]) == 0  # queued once per study and channel
    notifier.start()
    # receiver down: attempts fail and are retried with backoff, nothing is lost
    _wait(lambda: store.notifications()[0].attempts >= 2)
    notifier.stop()  # the server restarts: a new store and notifier on the same database
    store.close()
    store = StudyStore(tmp_path / "data")
    notifier = Notifier(store, _settings(port), "http://cxr.example")
    for st in studies[2:]:
        store.insert(st)
        notifier.enqueue(st)
    receiver.start()  # the receiver comes up, answers 500 once, then 204
    notifier.start()
    try:
        _wait(lambda: all(n.status == "delivered" for n in store.notifications()))
        time.sleep(0.3)  # nothing further arrives
    finally:
        notifier.stop()
        receiver.stop()
    got = receiver.unique()
    assert sorted(got) == [f"{1:016x}:webhook", f"{3:016x}:webhook"]  # 0.95 and 0.71 >= 0.7; 0.69 is not
    assert len(receiver.deliveries) == 2  # here at least once was exactly once
    assert got[f"{1:016x}:webhook"]["priority"] == pytest.approx(0.95)
    assert got[f"{1:016x}:webhook"]["models"][0]["label"] == "PNEUMONIA"
    assert got[f"{1:016x}:webhook"]["page_url"] == f"http://cxr.example/studies/{1:016x}"
    rows = {n.study_id: n for n in store.notifications()}
    assert rows[f"{1:016x}"].attempts >= 3 and rows[f"{1:016x}"].last_error is None
    audit = [e for e in store.audit_log() if e.action == "notify"]
    assert len(audit) == 2 and all("delivered" in (e.detail or "") for e in audit)
    store.close()


def test_gives_up_after_max_attempts(tmp_path: Path):
    store = StudyStore(tmp_path / "data")
    notifier = Notifier(store, _settings(free_port(), max_attempts=3))
    store.insert(_study(5, 0.9))
    assert notifier.enqueue(_study(5, 0.9)) == 1
    for _ in range(3):
        time.sleep(0.35)
        notifier.deliver_due()
    (row,) = store.notifications()
    assert row.status == "failed" and row.attempts == 3 and "Connection" in (row.last_error or "")
    store.close()


def test_email_over_smtp(tmp_path: Path):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received: list = []

    class Collect(Message):
        def handle_message(self, message) -> None:
            received.append(message)

    port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    store = StudyStore(tmp_path / "data")
    settings = NotifySettings(
        threshold=0.5, smtp_host=f"127.0.0.1:{port}", email_to=("reading-room@example.org",), poll_s=0.05
    )
    notifier = Notifier(store, settings, "http://cxr.example")
    try:
        assert settings.channels == ("email",)
        store.insert(_study(6, 0.8))
        assert notifier.enqueue(_study(6, 0.8)) == 1
        assert notifier.deliver_due() == 1
    finally:
        controller.stop()
    assert len(received) == 1
    msg = received[0]
    assert msg["To"] == "reading-room@example.org" and f"{6:016x}" in msg["Subject"]
    assert msg["Message-ID"] == f"<{6:016x}.email@cxrtriage>"
    assert f"http://cxr.example/studies/{6:016x}" in msg.get_payload()
    store.close()


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        NotifySettings(threshold=1.5)
    with pytest.raises(ValueError, match="http"):
        NotifySettings(threshold=0.5, webhook_url="ftp://x")
    assert NotifySettings(webhook_url="http://x").channels == ()  # no threshold: off
