"""Gate 1's refusals over every chest radiograph in ``../shared/data``, not only the drawn sample.

``cxr fit-gate`` draws up to 600 images per dataset; this scores all of them (every population, every
part) with the shipped gate and writes the refusal counts per population and per part (fit / threshold /
test; the fit part is the gate's own training data, so its figure is optimistic), with each refused file,
its score and part. Usage::

    python scripts/gate_every_image.py [--data ../shared/data] [--out docs/results/cxr-gate-every-image.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxrtriage.ood.gate import CXR_DATASETS, gate_part, load_gate, read_gate_rows, read_gray


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/cxr-gate-every-image.json"))
    ap.add_argument("--batch", type=int, default=256)
    a = ap.parse_args()
    gate = load_gate()
    if gate is None:
        raise SystemExit("no gate shipped (run `cxr fit-gate`)")
    counts: dict[str, dict[str, dict[str, int]]] = {}
    refused: list[dict] = []
    for name in CXR_DATASETS:
        if not (a.data / name / "manifest.csv").is_file():
            continue
        rows = read_gate_rows(a.data, name)
        for i in range(0, len(rows), a.batch):
            chunk = rows[i : i + a.batch]
            scores = gate.score_images([read_gray(p) for _, _, p in chunk])
            for (pop, key, path), score in zip(chunk, scores):
                part = gate_part(key)
                out = score < gate.threshold
                for where in (part, "all"):
                    c = counts.setdefault(pop, {}).setdefault(where, {"n": 0, "refused": 0})
                    c["n"] += 1
                    c["refused"] += int(out)
                if out:
                    refused.append({"population": pop, "file": str(path.relative_to(a.data)), "part": part,
                                    "score": round(float(score), 3)})  # fmt: skip
    total = {k: sum(c["all"][k] for c in counts.values()) for k in ("n", "refused")}
    result = {
        "what": "gate 1 refusals over every chest radiograph of ../shared/data (fit part = the gate's own training data)",
        "threshold": gate.threshold,
        "total": total,
        "per_population": counts,
        "refused_files": refused,
    }
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{total['refused']} of {total['n']} chest radiographs refused; written to {a.out}")
    for pop, c in counts.items():
        print(pop, {k: f"{v['refused']}/{v['n']}" for k, v in sorted(c.items())})


if __name__ == "__main__":
    main()
