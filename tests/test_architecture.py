"""The package graph: no two top-level packages import each other (function-level imports included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_between_top_level_packages() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "package_graph.py")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("cycles: none")
    edges = dict(line.split(" -> ", 1) for line in proc.stdout.splitlines() if " -> " in line and ":" not in line)
    # metrics/ is pure: it may use config and nothing else of ours.
    assert edges["metrics"].split(", ") in (["config"], ["(nothing)"])
