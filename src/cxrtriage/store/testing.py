"""A throw-away PostgreSQL server for tests and benchmarks of the study store (``initdb`` + ``pg_ctl``)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PgServer", "PgUnavailableError", "pg_bindir", "throwaway_pg_server"]


class PgUnavailableError(RuntimeError):
    """PostgreSQL cannot be started here (no binaries, no driver, no unprivileged user)."""


def pg_bindir() -> Path | None:
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


@contextlib.contextmanager
def throwaway_pg_server() -> Iterator[PgServer]:
    """Start a PostgreSQL cluster in a temporary folder (loopback, trust auth, fsync off); remove it afterwards.

    Yields
    ------
    PgServer

    Raises
    ------
    PgUnavailableError
        No psycopg, no PostgreSQL binaries, or running as root without an unprivileged user to run it as.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PgUnavailableError("psycopg (PostgreSQL driver) not installed") from None
    bindir = pg_bindir()
    if bindir is None:
        raise PgUnavailableError(
            "PostgreSQL binaries (initdb, pg_ctl, postgres) not found on PATH or in /usr/lib/postgresql/*/bin"
        )
    root = Path(tempfile.mkdtemp(prefix="cxrtriage-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _user_exists(u)), None)
        if user is None or shutil.which("runuser") is None:
            shutil.rmtree(root, ignore_errors=True)
            raise PgUnavailableError(
                "running as root without a 'postgres'/'nobody' user or runuser: cannot start PostgreSQL"
            )
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
