"""Shared test fixtures.

Real images only: the shipped examples (Kermany et al. 2018, CC BY 4.0),
images derived from them, and, where ``../shared/data`` exists beside the
repository, small real subsets of the shared datasets.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrtriage.store.testing import PgServer, PgUnavailableError, throwaway_pg_server

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXRTRIAGE_SHARED_DATA", REPO.parent / "shared" / "data"))
EXAMPLES = REPO / "src" / "cxrtriage" / "examples"


def pytest_configure(config):
    # Keep the decoded-image cache of the test run away from the user's cache.
    os.environ.setdefault("CXRTRIAGE_CACHE", str(REPO / ".cache" / "test-image-cache"))


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The shipped example images (4 NORMAL, 4 PNEUMONIA; 224 px JPEG)."""
    return EXAMPLES


@pytest.fixture(scope="session")
def example_paths(examples_dir) -> list[Path]:
    return sorted(examples_dir.glob("*.jpg"))


@pytest.fixture(scope="session")
def kermany_dir() -> Path:
    """../shared/data/kermany-pneumonia, or skip."""
    d = SHARED_DATA / "kermany-pneumonia"
    if not (d / "manifest.csv").is_file():
        pytest.skip("../shared/data/kermany-pneumonia not available")
    return d


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """../shared/data, or skip."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not available")
    return SHARED_DATA


def _jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    angle = float(rng.uniform(-8, 8))
    dx, dy = (int(v) for v in rng.integers(-10, 11, 2))
    out = img.rotate(angle, translate=(dx, dy), resample=Image.Resampling.BILINEAR)
    gamma = float(rng.uniform(0.8, 1.25))
    return out.point([min(255, int(255 * (i / 255) ** gamma)) for i in range(256)])


@pytest.fixture(scope="session")
def tiny_folder_dataset(tmp_path_factory, example_paths) -> Path:
    """An ImageFolder dataset (``ROOT/train/{NORMAL,PNEUMONIA}/``) of 40 real images.

    Made from the shipped examples: each example plus four rotated, shifted
    and gamma-changed copies, so every copy keeps its patient id prefix.
    """
    root = tmp_path_factory.mktemp("tiny") / "data"
    rng = np.random.default_rng(0)
    for p in example_paths:
        label, _, name = p.name.partition("_")
        d = root / "train" / label
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, d / name)
        img = Image.open(p).convert("L")
        stem = Path(name).stem
        for k in range(4):
            _jitter(img, rng).save(d / f"{stem}-aug{k}.png")
    return root


# ---------------------------------------------------------------------------
# PostgreSQL server (study store tests)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the session, or skip (no binaries, no psycopg, no unprivileged user)."""
    try:
        with throwaway_pg_server() as server:
            yield server
    except PgUnavailableError as exc:
        pytest.skip(str(exc))
