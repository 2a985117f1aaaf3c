"""Write the heatmap colour map as a lookup table shipped in the package (issue 25, item 1).

:func:`cxrtriage.explain.overlay.heatmap_overlay` colours a heatmap of ``uint8`` levels 0-255 with matplotlib's
``jet``. This script evaluates that colour map once at the 256 levels exactly as the overlay used to
(``colormaps["jet"](level / 255.0)`` on float32 levels, RGB, times 255, truncated to ``uint8``) and writes the
``uint8 (256, 3)`` table to ``src/cxrtriage/explain/jet_lut.npy``, so serving never imports matplotlib.

Usage::

    python scripts/make_colormap_lut.py [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxrtriage.explain.overlay import COLORMAP_LUT_PATH


def jet_lut() -> np.ndarray:
    """``uint8 (256, 3)``: matplotlib's ``jet`` at the levels ``0..255`` of a ``uint8`` heatmap."""
    from matplotlib import colormaps

    levels = np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0
    return (colormaps["jet"](levels)[..., :3] * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(COLORMAP_LUT_PATH))
    a = ap.parse_args()
    lut = jet_lut()
    np.save(a.out, lut, allow_pickle=False)
    print(f"wrote {a.out}: {lut.shape} {lut.dtype}, {Path(a.out).stat().st_size} bytes")


if __name__ == "__main__":
    main()
