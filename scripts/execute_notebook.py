"""Execute a notebook (nbclient) and save it with its outputs, stderr streams dropped.

    python scripts/execute_notebook.py examples/quickstart.ipynb

Used to refresh the executed notebook committed in ``examples/``; ``tests/test_notebook.py``
executes the same notebook on every test run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run every cell in the notebook's folder; returns the executed notebook (stderr outputs removed)."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    return nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    for path in ap.parse_args().notebooks:
        nbformat.write(execute(path), path)
        print(f"executed {path}")


if __name__ == "__main__":
    main()
