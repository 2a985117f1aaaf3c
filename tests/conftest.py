"""Shared test fixtures.

Real images only: the shipped examples (Kermany et al. 2018, CC BY 4.0),
images derived from them, and, where ``../shared/data`` exists beside the
repository, small real subsets of the shared datasets.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def _pg_bindir() -> Path | None:
    """Folder with initdb, pg_ctl and postgres: on PATH, else Debian's /usr/lib/postgresql/<ver>/bin."""
    cands: list[Path] = []
    found = shutil.which("pg_ctl")
    if found:
        cands.append(Path(found).resolve().parent)
    cands += [
        Path(p)
        for p in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
            reverse=True,
        )
    ]
    for d in cands:
        if all((d / exe).is_file() for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


class PgServer:
    """A running throw-away PostgreSQL cluster (superuser ``cxr``, trust authentication, loopback only)."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: list[str]):
        self.bindir, self.root, self.port, self.run_as = bindir, root, port, run_as
        self.data = root / "data"

    def _run(self, *args: str, timeout: float = 120) -> None:
        res = subprocess.run(
            [*self.run_as, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )
        if res.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").is_file() else ""
            raise RuntimeError(f"{args[0]} failed ({res.returncode}): {res.stdout}{res.stderr}{log}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "cxr",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        # fsync off: the tests kill clients, never the database server, so durability on disk is not what they check
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            cwd=self.root,
            capture_output=True,
            timeout=60,
            check=False,
        )

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="cxr", dbname="postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://cxr@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the session, or skip (no binaries, no psycopg, no unprivileged user)."""
    pytest.importorskip("psycopg", reason="psycopg (PostgreSQL driver) not installed")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin")
    root = Path(tempfile.mkdtemp(prefix="cxrtriage-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or shutil.which("runuser") is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a 'postgres'/'nobody' user or runuser: cannot start PostgreSQL")
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", user, "--"]
    server = PgServer(bindir, root, _free_pg_port(), run_as)
    try:
        server.start()
    except Exception:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _free_pg_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
