"""Compute reference probabilities of the shipped zoo models on the shipped examples.

Run ONCE from the pre-bundle layout (``model.pt`` + ``config.json``) at commit bb0ce07, before
``scripts/convert_zoo.py``; the output ``tests/fixtures/zoo_reference_probs.json`` is what
``tests/test_bundle.py`` compares the converted models against.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from cxrtriage.data.io import read_image
from cxrtriage.inference.predictor import Predictor
from cxrtriage.models.bundle import shipped_models, zoo_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "src" / "cxrtriage" / "examples"


def main(out: Path) -> None:
    """Write the fixture ``out`` (JSON: header + model -> example file -> probabilities)."""
    files = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    images = [read_image(EXAMPLES / f) for f in files]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result: dict = {
        "_header": (
            f"Produced once by scripts/zoo_reference_probs.py at commit {commit} from the OLD zoo layout "
            "(model.pt state_dict + config.json, loaded by models.bundle.load_model, Predictor.probabilities, "
            "torch CPU, 2 threads) on src/cxrtriage/examples/*.jpg, before scripts/convert_zoo.py converted the "
            "zoo to model.safetensors. Values are softmax(logits / temperature), float64, written with repr."
        ),
        "torch": __import__("torch").__version__,
        "models": {},
    }
    for name in shipped_models():
        assert (zoo_dir() / name / "model.pt").is_file(), f"{name}: model.pt missing (already converted?)"
        pred = Predictor(zoo_dir() / name)
        probs = pred.probabilities(images)
        result["models"][name] = {
            "classes": list(pred.config.classes),
            "probabilities": {f: [float(v) for v in row] for f, row in zip(files, np.asarray(probs))},
        }
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "tests" / "fixtures" / "zoo_reference_probs.json")
