"""Command-line options derived from config dataclasses: the defaults, help and choices live with the fields.

``add_dataclass_arguments`` turns each field of a dataclass into an ``argparse`` option (``image_size`` ->
``--image-size``); ``dataclass_from_args`` builds the dataclass back from the parsed namespace. Booleans that
default to ``True`` become ``--no-X`` switches, those that default to ``False`` become ``--X`` switches.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "add_dataclass_arguments",
    "add_device_argument",
    "add_model_argument",
    "dataclass_from_args",
    "exposed_fields",
]

T = TypeVar("T")


def _scalar_type(annotation: Any) -> tuple[type, bool]:
    """``(type, optional)`` of a field annotation ``X`` or ``X | None``; only ``int``, ``float``, ``str``, ``bool``."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"unsupported field type {annotation!r}")
        annotation = args[0]
    if annotation not in (int, float, str, bool):
        raise TypeError(f"unsupported field type {annotation!r}")
    return annotation, optional


def exposed_fields(
    cls: type, include: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> list[dataclasses.Field]:
    """Fields of dataclass ``cls`` that become options: ``include`` (all when ``None``) minus ``exclude``.

    Raises
    ------
    KeyError
        A name in ``include`` or ``exclude`` is not a field of ``cls``.
    """
    all_fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in [*(include or ()), *exclude]:
        if name not in all_fields:
            raise KeyError(f"{cls.__name__} has no field {name!r}")
    names = list(include) if include is not None else list(all_fields)
    skip = set(exclude)
    return [all_fields[n] for n in names if n not in skip]


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    defaults: Mapping[str, Any] | None = None,
    required: Iterable[str] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """Add one option per field of dataclass ``cls`` to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    cls : dataclass type
        Fields typed ``int``, ``float``, ``str``, ``bool`` or ``X | None``; help text from
        ``field.metadata["help"]``, allowed values from ``field.metadata["choices"]``.
    include, exclude : iterable of str
        Field names to expose (all by default) and to leave out.
    defaults : mapping, optional
        Command-specific defaults replacing the dataclass defaults for some fields (shown in ``--help``).
    required : iterable of str
        Fields that must be given on the command line (no default).
    help : mapping, optional
        Command-specific help text for some fields.

    Raises
    ------
    KeyError
        Unknown field name in ``include``, ``exclude``, ``defaults``, ``required`` or ``help``.
    TypeError
        A field type that has no command-line form (a list, a dict...).
    """
    defaults = dict(defaults or {})
    help = dict(help or {})
    required = set(required)
    exposed = exposed_fields(cls, include, exclude)
    names = {f.name for f in exposed}
    for name in [*defaults, *required, *help]:
        if name not in names:
            raise KeyError(f"{name!r} is not an exposed field of {cls.__name__}")
    hints = typing.get_type_hints(cls)
    for f in exposed:
        typ, _ = _scalar_type(hints[f.name])
        default = defaults.get(f.name, f.default)
        text = help.get(f.name, f.metadata.get("help", "")).replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if typ is bool:
            if default:
                parser.add_argument(
                    "--no-" + f.name.replace("_", "-"),
                    dest=f.name,
                    action="store_false",
                    default=True,
                    help=f"turn off: {text} (on by default)",
                )
            else:
                parser.add_argument(
                    flag, dest=f.name, action="store_true", default=False, help=f"{text} (off by default)"
                )
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "type": f.metadata.get("parse", typ), "help": text}
        if "choices" in f.metadata:
            kwargs["choices"] = tuple(f.metadata["choices"])
        if f.name in required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            kwargs["help"] = text + " (default: %(default)s)"
        parser.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Build dataclass ``cls`` from the parsed options of :func:`add_dataclass_arguments`.

    Fields without an option in ``args`` keep the dataclass default; ``overrides`` win over both.

    Raises
    ------
    TypeError
        ``cls`` is not a dataclass, or ``overrides`` names a field it does not have.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """The optional ``--model`` option of commands that default to the shipped model.

    Takes a model folder or a shipped model's name (``cxr models``); ``None`` means the
    shipped default model (:func:`cxrtriage.models.bundle.default_model_dir`).
    """
    parser.add_argument(
        "--model",
        default=None,
        help="model folder or shipped model name (`cxr models`; default: the shipped pneumonia model)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` option of commands that run a trained model (help and check from ``ScoreConfig.device``)."""
    from cxrtriage.config import ScoreConfig, check_device

    help_text = next(f for f in dataclasses.fields(ScoreConfig) if f.name == "device").metadata["help"]
    parser.add_argument("--device", type=check_device, default="auto", help=help_text + " (default: %(default)s)")
