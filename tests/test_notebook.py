"""examples/quickstart.ipynb runs from top to bottom (nbclient) and prints what the API returns."""

from __future__ import annotations

from pathlib import Path

import pytest

import cxrtriage

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "quickstart.ipynb"


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                parts.append(out["text"])
    return "".join(parts)


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_quickstart_notebook_executes(example_paths):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    text = _text(nb)
    preds = cxrtriage.load_model("pneumonia").predict(example_paths)
    for path, pred in zip(example_paths, preds):
        line = next(line for line in text.splitlines() if line.startswith(path.name))
        assert line.split()[1] == pred.label, line
        assert f"PNEUMONIA {pred.probabilities['PNEUMONIA']:.3f}" in line
    assert "(224, 224) (224, 224) float32" in text
    assert "auroc" in text and "[[4, 0], [0, 4]]" in text
    assert _images(nb) == 2  # the heatmap figure and the ROC curve


def test_committed_notebook_is_executed_and_has_no_machine_paths():
    text = NOTEBOOK.read_text()
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    assert _images(nb) == 2 and "PNEUMONIA_person624_virus_1198.jpg" in _text(nb)
    repo = str(NOTEBOOK.resolve().parent.parent)  # the checkout's own absolute location, wherever it is
    for marker in (repo, str(Path.home()), "/tmp/"):
        assert marker not in text, marker
