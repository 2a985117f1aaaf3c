"""Write the HTTP API's OpenAPI document to docs/reference/openapi.json (rendered on the docs site).

Run after changing a route or a schema: ``python scripts/export_openapi.py``;
``tests/test_api_contract.py`` fails while the committed file is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrtriage.serve.app import openapi_schema

OUT = Path(__file__).resolve().parents[1] / "docs" / "reference" / "openapi.json"


def render() -> str:
    """The document as committed: indented JSON with a final newline."""
    return json.dumps(openapi_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
