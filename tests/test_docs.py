"""The Python code blocks of the docs site run as written (each page's blocks in order, one namespace per page)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["quickstart.md", "datasets.md", "evaluation.md", "segmentation.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def test_every_page_with_python_is_tested():
    with_python = sorted(p.name for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))
    assert with_python == sorted(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_python_blocks_run(page, capsys):
    blocks = BLOCK.findall((DOCS / page).read_text())
    assert blocks
    namespace: dict = {"__name__": f"docs_{page}"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.strip()  # every page prints what it shows
    if page == "quickstart.md":
        assert "PNEUMONIA_person624_virus_1198.jpg PNEUMONIA" in out
        assert "(224, 224) float32 True True" in out
        assert "PNG or JPEG" in out
