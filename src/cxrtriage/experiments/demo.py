"""``cxr demo``: the shipped model on the shipped examples, as an HTML page."""

from __future__ import annotations

import csv
import html
from pathlib import Path

from cxrtriage import DISCLAIMER
from cxrtriage.inference.run import predict_files

__all__ = ["run_demo", "examples_dir"]


def examples_dir() -> Path:
    """Folder of the shipped example images (Kermany et al. 2018, CC BY 4.0)."""
    return Path(__file__).resolve().parent.parent / "examples"


def run_demo(model_dir: str | Path | None = None, out: str | Path = "demo_out") -> Path:
    """Predict every shipped example, print each result, and write ``out/index.html``.

    Returns
    -------
    pathlib.Path
        The HTML page.
    """
    ex = examples_dir()
    truth = {}
    with (ex / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            truth[row["path"]] = row["label"]
    paths = sorted(ex / name for name in truth)
    out = Path(out)
    results, errors = predict_files(model_dir, paths, out / "images")
    if not results:
        raise ValueError(f"{ex}: none of the example images could be read")
    version = results[0]["model"]
    cards = []
    for r in results:
        name = Path(r["path"]).name
        probs = "".join(
            f"<tr><td>{html.escape(c)}</td><td><meter min='0' max='1' value='{p:.4f}'></meter></td><td>{p * 100:.1f}%</td></tr>"
            for c, p in r["probabilities"].items()
        )
        ok = "correct" if r["label"].lower() == truth[name].lower() else "wrong"
        print(
            f"{name}: {r['label']} ({', '.join(f'{c} {p:.3f}' for c, p in r['probabilities'].items())}) - reference label {truth[name]}"
        )
        cards.append(
            f"""<section class="card"><h2>{html.escape(name)}</h2>
<div class="imgs"><img src="images/{Path(r["annotated"]).name}" alt="annotated {html.escape(name)}">
<img src="images/{Path(r["gradcam"]).name}" alt="Grad-CAM {html.escape(name)}"></div>
<p>AI label: <b>{html.escape(r["label"])}</b> &middot; reference label: {html.escape(truth[name])} <span class="{ok}">({ok})</span>
&middot; triage: {html.escape(r["triage"])}</p><table>{probs}</table></section>"""
        )
    for path, reason in errors:
        print(f"skipped {path}: {reason}")
    thr = results[0]["threshold"]
    page = out / "index.html"
    page.write_text(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>cxrtriage demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:1rem;max-width:1100px}}.card{{border:1px solid #ccc;border-radius:8px;padding:.5rem 1rem;margin:1rem 0}}
.imgs img{{width:48%;max-width:420px;margin-right:1%}}.correct{{color:#070}}.wrong{{color:#b00}}.disclaimer{{background:#fff3cd;padding:.6rem;border-radius:6px}}
meter{{width:160px}}</style></head><body>
<h1>cxrtriage demo</h1><p class="disclaimer"><b>{html.escape(DISCLAIMER)}</b></p>
<p>Model <code>{html.escape(version)}</code>; decision threshold {thr if thr is None else f"{thr:.4f}"} on the pneumonia probability.
Left: the image with the class probabilities; right: Grad-CAM heatmap of the predicted class (Selvaraju et al., ICCV 2017).
Images: Kermany et al., Cell 2018, CC BY 4.0, from the validation split the model did not train on.</p>
{"".join(cards)}
<p class="disclaimer">{html.escape(DISCLAIMER)}</p></body></html>
"""
    )
    return page
