"""Name the pip extra a command needs when one of its optional modules is missing."""

from __future__ import annotations

__all__ = ["EXTRA_OF_MODULE", "missing_extra_hint"]

#: Top-level module -> the extra of ``pyproject.toml`` (``[project.optional-dependencies]``) that installs it.
EXTRA_OF_MODULE = {
    "alembic": "serve",
    "fastapi": "serve",
    "fhir": "serve",
    "fpdf": "serve",
    "highdicom": "serve",
    "jinja2": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "onnx": "serve",
    "onnxruntime": "serve",
    "psycopg": "serve",
    "pynetdicom": "serve",
    "qrcode": "serve",
    "sqlalchemy": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
}


def missing_extra_hint(command: str, exc: ModuleNotFoundError) -> str | None:
    """One line saying which extra installs the missing module, or None when it is not an extra's.

    Parameters
    ----------
    command : str
        The ``cxr`` sub-command, e.g. ``"serve"``.
    exc : ModuleNotFoundError
        The import error (``exc.name`` is the missing module, e.g. ``"uvicorn"`` or ``"fastapi.routing"``).

    Returns
    -------
    str or None
        e.g. ``cxr serve needs the serve extra: pip install "cxrtriage[serve]"``.
    """
    extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return f'cxr {command} needs the {extra} extra: pip install "cxrtriage[{extra}]"'
