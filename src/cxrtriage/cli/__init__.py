"""The ``cxr`` command line: thin parsers, one module per command group."""

from cxrtriage.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
