"""``cxr listen``: receive chest radiographs from a PACS or modality over DICOM, send the results back."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from cxrtriage import DISCLAIMER
from cxrtriage.cli.serve import add_analysis_arguments, analysis_settings
from cxrtriage.pacs.settings import ListenSettings

__all__ = ["register"]

#: The option defaults: those of :class:`~cxrtriage.pacs.settings.ListenSettings` (one source of defaults).
_D = {f.name: f.default for f in dataclasses.fields(ListenSettings)}


def _cmd_listen(a: argparse.Namespace) -> int:
    from cxrtriage.pacs.listener import Listener
    from cxrtriage.pacs.settings import Destination
    from cxrtriage.serve.settings import ServeSettings
    from cxrtriage.store import DatabaseURLError, StoreUnavailableError, resolve_database_url

    try:  # bad options are reported before the model loads
        resolve_database_url(a.database_url, a.data_dir)
        return_to = Destination.parse(a.return_to) if a.return_to else None
    except (DatabaseURLError, ValueError) as exc:
        print(f"cxr listen: {exc}", file=sys.stderr)
        return 2
    serve = ServeSettings(
        **analysis_settings(a), data_dir=Path(a.data_dir), database_url=a.database_url, max_upload_mb=a.max_instance_mb
    )
    settings = ListenSettings(
        service=serve,
        ae_title=a.ae_title,
        host=a.host,
        port=a.port,
        allowed_calling=tuple(a.allow or ()),
        return_to=return_to,
        retry_base_s=a.retry_base,
        retry_max_s=a.retry_max,
    )
    try:
        listener = Listener(settings)
    except (DatabaseURLError, StoreUnavailableError) as exc:
        print(f"cxr listen: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    port = listener.start()
    models = ", ".join(f"{m.model_name} ({m.config.version})" for m in listener.service.engine.models)
    allowed = ", ".join(settings.allowed_calling) if settings.allowed_calling else "any calling AE title"
    print(
        f"cxr listen: DICOM Storage SCP {settings.ae_title} on {settings.host}:{port} (C-STORE CR/DX, C-ECHO; "
        f"from {allowed}); model(s): {models}; data in {serve.data_dir}"
    )
    if return_to is not None:
        pending = listener.outbox.counts(str(return_to)).get("pending", 0)
        print(f"results (SR + heatmap Secondary Capture) go to {return_to}; {pending} waiting in the outbox")
    else:
        print("no --return-to: studies are analysed and stored, no result is sent back")
    print(DISCLAIMER)
    sys.stdout.flush()
    try:
        stop.wait()
    finally:
        listener.stop()
        listener.service.store.close()
    return 0


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add the ``listen`` sub-command."""
    p = sub.add_parser(
        "listen",
        help="DICOM listener (C-STORE SCP): analyse CR/DX chest radiographs from a PACS, send SR + heatmap back",
    )
    p.add_argument("--ae-title", default=_D["ae_title"], help="our AE title (default %(default)s)")
    p.add_argument("--host", default=_D["host"], help="listen address (default %(default)s); 0.0.0.0 for the network")
    p.add_argument("--port", type=int, default=_D["port"], help="DICOM port (default %(default)s)")
    p.add_argument(
        "--allow",
        action="append",
        metavar="AE",
        help="calling AE title allowed to send (repeat for several; default: any)",
    )
    p.add_argument(
        "--return-to",
        default=None,
        metavar="AE@HOST:PORT",
        help="send the SR and the heatmap series there by C-STORE (e.g. ORTHANC@pacs.example.org:4242)",
    )
    p.add_argument(
        "--data-dir", default="cxrtriage-data", help="stored images, and the SQLite database unless --database-url"
    )
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL of the studies database (as cxr serve)")
    p.add_argument("--max-instance-mb", type=float, default=64.0, help="largest accepted instance, MB (default 64)")
    p.add_argument(
        "--retry-base", type=float, default=_D["retry_base_s"], help="first retry after a failed send, s (%(default)s)"
    )
    p.add_argument(
        "--retry-max", type=float, default=_D["retry_max_s"], help="longest wait between retries, s (%(default)s)"
    )
    add_analysis_arguments(p)
    commands["listen"] = _cmd_listen
