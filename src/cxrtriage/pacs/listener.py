"""``cxr listen``: a DICOM Storage SCP (C-STORE, C-ECHO; pynetdicom) feeding the study store.

Each received instance goes through
:meth:`cxrtriage.serve.service.StudyService.predict`, the web upload's code
path: size limit, DICOM decode with de-identification
(:mod:`cxrtriage.data.dicom`), gate 1 (is it a chest radiograph?), the models,
the out-of-population check, the draft report, the store. The store keeps only
the de-identified study; the identifiers needed to file the results into the
same patient and study (:data:`cxrtriage.report.dicom_out.IDENTIFYING_KEYWORDS`)
stay in memory and in the outbox rows until the PACS accepted them.

DIMSE statuses of the C-STORE response (PS3.4 Annex B.2.3, PS3.7 Annex C):

=========  ===================================================================
0x0000     analysed and stored (also for the same pixels sent again)
0x0122     Refused: SOP Class not supported (not CR / DX image storage)
0xA700     Refused: Out of resources (too large a file; decoders busy)
0xC000     Error: Cannot understand (unreadable or malformed data, a modality
           other than CR/DX, not a chest radiograph, outside the population)
0x0110     Processing failure (an unexpected error; logged with its traceback)
=========  ===================================================================

Each refusal has an ``ErrorComment`` (the reason, at most 64 characters) and a
log line with the calling AE title and the full reason. Associations from AE
titles outside the allow-list are rejected (A-ASSOCIATE-RJ, calling AE title
not recognised).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from cxrtriage.pacs.sender import Sender
from cxrtriage.pacs.settings import ListenSettings
from cxrtriage.serve.interop import (
    CANNOT_UNDERSTAND,
    CXR_STORAGE_SOP_CLASSES,
    PROCESSING_FAILURE,
    SOP_CLASS_NOT_SUPPORTED,
    SUCCESS,
    failure_status,
    queue_results,
)
from cxrtriage.serve.service import ApiError, StudyService
from cxrtriage.store import Outbox

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["Listener"]

log = logging.getLogger(__name__)


def _status(code: int, comment: str | None = None) -> Dataset:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds


class Listener:
    """The DICOM Storage SCP and, with ``settings.return_to``, the sender of its results.

    Parameters
    ----------
    settings : ListenSettings
    service : StudyService, optional
        Built from ``settings.service`` when not given (loads the model, opens the store).

    Attributes
    ----------
    port : int
        The bound port (after :meth:`start`; the free port chosen when ``settings.port`` is 0).
    received, refused : int
        Instances stored (0x0000) and refused (any failure status) since start.
    """

    def __init__(self, settings: ListenSettings, service: StudyService | None = None) -> None:
        self.settings = settings
        self.service = service or StudyService(settings.service)
        self.outbox = Outbox(self.service.store)
        self.sender: Sender | None = None
        if settings.return_to is not None:
            self.sender = Sender(
                self.outbox,
                settings.return_to,
                settings.ae_title,
                retry_base_s=settings.retry_base_s,
                retry_max_s=settings.retry_max_s,
                batch=settings.send_batch,
                poll_s=settings.poll_s,
                timeout_s=settings.network_timeout_s,
            )
        self._server: Any = None
        self.port = settings.port
        self.received = 0
        self.refused = 0
        self._count_lock = threading.Lock()

    # -- handlers ---------------------------------------------------------
    def _refuse(self, code: int, reason: str, calling: str) -> Dataset:
        with self._count_lock:
            self.refused += 1
        log.warning("C-STORE from %s refused (0x%04X): %s", calling, code, reason)
        return _status(code, reason)

    def handle_store(self, event: Any) -> Dataset | int:
        """``EVT_C_STORE`` handler: analyse one instance, queue its results; the C-STORE status."""
        calling = str(event.assoc.requestor.ae_title).strip()
        sop_class = str(event.context.abstract_syntax)
        if sop_class not in CXR_STORAGE_SOP_CLASSES:
            return self._refuse(
                SOP_CLASS_NOT_SUPPORTED,
                f"SOP Class {sop_class} is not CR/DX image storage",
                calling,
            )
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception as exc:  # noqa: BLE001 - a data set pynetdicom cannot re-encode is the sender's problem
            return self._refuse(CANNOT_UNDERSTAND, f"malformed data set ({exc.__class__.__name__})", calling)
        name = f"C-STORE from {calling}"
        try:
            rec, duplicate, _ = self.service.predict(data, name, source="pacs")
        except ApiError as exc:
            return self._refuse(failure_status(exc), exc.reason.removeprefix(f"{name}: "), calling)
        except Exception as exc:  # noqa: BLE001 - never let one instance stop the listener
            log.exception("C-STORE from %s: unexpected error", calling)
            return self._refuse(PROCESSING_FAILURE, f"processing failure ({exc.__class__.__name__})", calling)
        if self.sender is not None:
            try:
                self._queue_results(data, rec)
            except Exception as exc:  # noqa: BLE001 - the study is stored; the modality may send again
                log.exception("C-STORE from %s: study %s stored, but building its results failed", calling, rec.id)
                return self._refuse(PROCESSING_FAILURE, f"results not built ({exc.__class__.__name__})", calling)
        with self._count_lock:
            self.received += 1
        log.info("C-STORE from %s: study %s%s", calling, rec.id, " (same pixels as before)" if duplicate else "")
        return SUCCESS

    def _queue_results(self, data: bytes, rec: Any) -> None:
        assert self.sender is not None and self.settings.return_to is not None
        queue_results(self.service, rec, data, str(self.settings.return_to))
        self.sender.wake()

    @staticmethod
    def handle_echo(event: Any) -> int:
        """``EVT_C_ECHO`` handler: always success (0x0000)."""
        return SUCCESS

    # -- life cycle -------------------------------------------------------
    def _ae(self) -> Any:
        from pydicom.uid import AllTransferSyntaxes
        from pynetdicom import AE, AllStoragePresentationContexts
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_associations = 16
        if self.settings.allowed_calling:
            ae.require_calling_aet = list(self.settings.allowed_calling)
        for cx in AllStoragePresentationContexts:
            syntaxes = AllTransferSyntaxes if cx.abstract_syntax in CXR_STORAGE_SOP_CLASSES else cx.transfer_syntax
            ae.add_supported_context(str(cx.abstract_syntax), syntaxes)
        ae.add_supported_context(Verification)
        return ae

    def start(self) -> int:
        """Start listening (non-blocking) and the sender; returns the bound port."""
        from pynetdicom import evt

        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo)]
        self._server = self._ae().start_server(
            (self.settings.host, self.settings.port), block=False, evt_handlers=handlers
        )
        self.port = int(self._server.server_address[1])
        if self.sender is not None:
            self.sender.start()
        log.info(
            "DICOM listener %s on %s:%d%s",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            f", results to {self.settings.return_to}" if self.settings.return_to else "",
        )
        return self.port

    def stop(self) -> None:
        """Stop listening and sending (queued results stay in the outbox)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self.sender is not None:
            self.sender.stop()

    def __enter__(self) -> Listener:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
