"""Helpers to run a real server in-process (tests, benchmarks): uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxrtriage.serve.service import StudyService
    from cxrtriage.serve.settings import ServeSettings

__all__ = ["free_port", "serve_command", "running_server", "find_model_dir", "copy_model_dir", "add_user"]


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(
    model_dir: str | Path | Sequence[str | Path] | None, data_dir: str | Path, port: int, *extra: str
) -> list[str]:
    """Argument vector that starts ``cxr serve`` (the real CLI, this interpreter) on ``127.0.0.1:port``.

    ``model_dir``: one model folder, several (``--model`` repeated), or None (every shipped model).
    ``extra`` are further ``cxr serve`` options, e.g. ``"--database-url", url``.
    """
    dirs = [] if model_dir is None else [model_dir] if isinstance(model_dir, (str, Path)) else list(model_dir)
    return [
        sys.executable,
        "-m",
        "cxrtriage.cli",
        "serve",
        *(arg for d in dirs for arg in ("--model", str(d))),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def add_user(
    data_dir: str | Path, username: str, password: str, role: str = "radiologist", database_url: str | None = None
) -> None:
    """Create a server user in the store of ``data_dir`` / ``database_url`` (as ``cxr users add`` does)."""
    from cxrtriage.store import StudyStore

    store = StudyStore(data_dir, database_url)
    try:
        store.add_user(username, password, role)
    finally:
        store.close()


def find_model_dir() -> Path | None:
    """The model to test with: ``$CXRTRIAGE_TEST_MODEL`` or the shipped model; None if neither exists."""
    from cxrtriage.models.bundle import CONFIG_JSON, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE, default_model_dir

    for cand in (os.environ.get("CXRTRIAGE_TEST_MODEL"), default_model_dir()):
        has_weights = cand and any((Path(cand) / w).is_file() for w in (WEIGHTS_FILE, LEGACY_WEIGHTS_FILE))
        if cand and has_weights and (Path(cand) / CONFIG_JSON).is_file():
            return Path(cand)
    return None


def copy_model_dir(src: str | Path, dst: str | Path, export: bool = True) -> Path:
    """Copy a model bundle folder (weights, config, sections, card, ONNX, OOD detector); export ONNX if missing."""
    from cxrtriage.models.bundle import BUNDLE_JSON, CONFIG_JSON, LEGACY_WEIGHTS_FILE, README_FILE, WEIGHTS_FILE

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_JSON, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE, BUNDLE_JSON, README_FILE, "model.onnx", "ood.npz"):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    if export and not (dst / "model.onnx").is_file():
        from cxrtriage.inference.export import export_onnx

        export_onnx(dst)
    return dst


@contextlib.contextmanager
def running_server(
    settings: ServeSettings, service: StudyService | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Run the app with uvicorn in a background thread; yields the base URL ``http://127.0.0.1:PORT``.

    The server listens on ``settings.host``/``settings.port`` (set ``port=0``
    for a free port). It is shut down (graceful exit) when the block ends.
    """
    import uvicorn

    from cxrtriage.serve.app import create_app

    if not settings.port:
        settings.port = free_port()
    app = create_app(settings, service)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="cxrtriage-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server thread died during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{settings.host}:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
