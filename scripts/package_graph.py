"""Print the import graph between cxrtriage's top-level packages, and any cycle in it.

Every import counts, module-level and function-level alike (read by grimp, the
library behind import-linter). Run from a checkout with the package importable::

    python scripts/package_graph.py            # edges, one per line, and cycles
    python scripts/package_graph.py --dot      # Graphviz DOT on stdout

Exits 1 when two top-level packages import each other, directly or through others.
"""

from __future__ import annotations

import argparse
import sys

import grimp

ROOT = "cxrtriage"


def package_edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    """Top-level package -> the top-level packages it imports (itself left out).

    Modules directly under ``cxrtriage`` (``config``, ``tasks``) count as packages of
    their own; the root ``cxrtriage/__init__.py`` (version, disclaimer) is left out.
    """
    tops = sorted(graph.find_children(ROOT))
    edges: dict[str, set[str]] = {t.split(".")[1]: set() for t in tops}
    for imp in graph.find_matching_direct_imports(import_expression=f"{ROOT}.** -> {ROOT}.**"):
        a, b = imp["importer"].split("."), imp["imported"].split(".")
        if len(a) > 1 and len(b) > 1 and a[1] != b[1]:
            edges[a[1]].add(b[1])
    return edges


def package_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles among packages: for each pair reaching each other, one shortest loop (sorted, deduplicated)."""

    def reach(src: str) -> dict[str, list[str]]:
        paths = {src: [src]}
        todo = [src]
        while todo:
            nxt = []
            for node in todo:
                for t in sorted(edges.get(node, ())):
                    if t not in paths:
                        paths[t] = paths[node] + [t]
                        nxt.append(t)
            todo = nxt
        return paths

    found: dict[frozenset[str], list[str]] = {}
    for a in sorted(edges):
        for b in sorted(edges[a]):
            back = reach(b)
            if a in back:
                loop = [a] + back[a]
                key = frozenset(loop)
                if key not in found or len(loop) < len(found[key]):
                    found[key] = loop
    return sorted(found.values())


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns 1 if a cycle exists, else 0."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dot", action="store_true", help="write Graphviz DOT instead of plain text")
    args = ap.parse_args(argv)
    graph = grimp.build_graph(ROOT, include_external_packages=False)
    edges = package_edges(graph)
    cycles = package_cycles(edges)
    if args.dot:
        print("digraph cxrtriage {")
        for a, targets in sorted(edges.items()):
            for b in sorted(targets):
                print(f'  "{a}" -> "{b}";')
        print("}")
    else:
        for a, targets in sorted(edges.items()):
            print(f"{a} -> {', '.join(sorted(targets)) or '(nothing)'}")
        print(f"cycles: {'; '.join(' -> '.join(c) for c in cycles) if cycles else 'none'}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
