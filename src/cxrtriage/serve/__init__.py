"""Web platform: FastAPI app (upload page, result pages, REST API), persistence and serving.

Start it with ``cxr serve`` (:mod:`cxrtriage.cli.serve`) or build the app with
:func:`cxrtriage.serve.app.create_app`.
"""

from typing import Any

__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str) -> Any:  # lazy: importing the package must not import FastAPI
    if name == "create_app":
        from cxrtriage.serve.app import create_app

        return create_app
    if name == "ServeSettings":
        from cxrtriage.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(name)
