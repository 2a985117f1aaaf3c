"""Hospital integration over DICOM: receive studies from a PACS (C-STORE SCP), send AI results back.

``cxr listen`` runs :class:`~cxrtriage.pacs.listener.Listener`: a DICOM
Storage SCP (pynetdicom) that analyses each received CR/DX chest radiograph
through the same :class:`~cxrtriage.serve.service.StudyService` code path as
the web upload, then queues a Comprehensive SR and a heatmap Secondary
Capture (:mod:`cxrtriage.report.dicom_out`) in the persisted outbox
(:mod:`cxrtriage.store.outbox`), which :class:`~cxrtriage.pacs.sender.Sender`
delivers by C-STORE with retries.

Layer 5, above :mod:`cxrtriage.serve` (it uses ``StudyService``; ``serve`` never imports ``pacs``).
"""

from cxrtriage.pacs.settings import Destination, ListenSettings

__all__ = ["Destination", "ListenSettings"]
