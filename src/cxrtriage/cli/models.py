"""``cxr models``: the shipped models and their headline figures (a plugin of :mod:`cxrtriage.cli`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

__all__ = ["register", "shipped_model_rows", "shipped_models_markdown"]


def shipped_model_rows() -> list[dict[str, str]]:
    """One row per shipped model, read from its bundle (:class:`cxrtriage.models.bundle.ModelBundle`).

    Returns
    -------
    list of dict
        Keys ``name, task, classes, arch, image_size, size_mb, validation, test,
        external, audit, ece, card`` (strings; ``–`` where the bundle has no such figure).
        The headline is AUROC (macro one-vs-rest AUROC for multi-class tasks) with its 95 %
        bootstrap interval, plus sensitivity and specificity (binary) or macro sensitivity.
        ``validation`` and ``test`` are in-source (the training data's source); ``external``
        lists each out-of-source set (its defined metrics only: a set of one class has no
        AUROC); ``audit`` gives the AUROC with the lung fields hidden (near 0.5 = the model
        needs the lungs) and the source probe's AUROC.
    """
    from cxrtriage.metrics.report import Estimate, MetricReport, format_estimate
    from cxrtriage.models.bundle import README_FILE, ModelBundle, shipped_models, zoo_dir
    from cxrtriage.tasks import get_task

    def fmt(rep: MetricReport, key: str) -> str:
        est = rep.metrics.get(key)
        return f"{key} {format_estimate(est)}" if est is not None and est.value is not None else "–"

    def external(rep: MetricReport, name: str, keys: tuple[str, ...]) -> str:
        figs = [fmt(rep, k) for k in keys]
        return f"{name} (n={rep.n}): " + "; ".join(f for f in figs if f != "–")

    def audit(b: ModelBundle) -> str:
        a = b.audit
        if a is None:
            return "–"
        probe = (a.source_probe or {}).get("auroc") or {}
        text = (
            f"lungs hidden: {fmt(a.lungs_hidden, 'auroc')} (as is {format_estimate(a.original.metrics.get('auroc'))})"
        )
        if probe.get("value") is not None:
            text += f"; source probe auroc {format_estimate(Estimate.from_dict(probe))}"
        return text

    rows = []
    for name in shipped_models():
        b = ModelBundle.load(name)
        cfg, ev, cal = b.config, b.evaluation, b.calibration
        d = zoo_dir() / name
        keys = (
            ("auroc", "sensitivity", "specificity") if get_task(cfg.task).is_binary else ("auroc", "macro_sensitivity")
        )
        rows.append(
            {
                "name": name,
                "task": cfg.task,
                "classes": ", ".join(cfg.classes),
                "arch": cfg.arch,
                "image_size": f"{cfg.image_size} px" + ("" if cfg.input == "full" else f", {cfg.input}"),
                "size_mb": f"{b.weights_mb():.1f}",
                "validation": "; ".join(fmt(ev.validation, k) for k in keys) if ev else "–",
                "test": "; ".join(fmt(ev.test, k) for k in keys)
                if ev and ev.test
                else "– (no held-out test in the card)",
                "external": "<br>".join(external(e.report, e.name, keys) for e in ev.external)
                if ev and ev.external
                else "– (none: in-source figures only)",
                "audit": audit(b),
                "ece": f"{cal.ece_before:.3f} → {cal.ece_after:.3f}" if cal else "–",
                "card": str((d / README_FILE).relative_to(zoo_dir().parent.parent.parent))
                if (d / README_FILE).is_file()
                else "–",
            }
        )
    return rows


def shipped_models_markdown(link_prefix: str = "") -> str:
    """Markdown table of :func:`shipped_model_rows`; card links are ``link_prefix + card``."""
    head = [
        "model",
        "task",
        "input",
        "weights (MB)",
        "validation (95% CI)",
        "held-out test (95% CI)",
        "out-of-source (95% CI)",
        "shortcut audit",
        "ECE val before → after",
        "card",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shipped_model_rows():
        card = f"[card]({link_prefix}{r['card']})" if r["card"] != "–" else "–"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['image_size']} | {r['size_mb']} | {r['validation']} | "
            f"{r['test']} | {r['external']} | {r['audit']} | {r['ece']} | {card} |"
        )
    return "\n".join(lines) + "\n"


def _cmd_models(a: argparse.Namespace) -> int:
    if a.json:
        print(json.dumps(shipped_model_rows(), indent=1, ensure_ascii=False))
    else:
        print(shipped_models_markdown(a.link_prefix), end="")
    return 0


def _cmd_ensemble(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.ensemble import build_seed_ensemble

    out = build_seed_ensemble(a.members, a.out, float16=not a.float32)
    print(
        f"seed ensemble of {len(a.members)} written to {out}; next: cxr calibrate --model {out}, "
        f"cxr export --model {out}, cxr card --model {out}"
    )
    return 0


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``models`` and ``ensemble`` to the ``cxr`` parser."""
    e = sub.add_parser(
        "ensemble",
        help="merge model folders of one recipe and validation split (cxr train --split-seed) into a seed ensemble "
        "(mean of the logits, one ONNX graph)",
    )
    e.add_argument("--members", nargs="+", required=True, help="model folders (at least 2)")
    e.add_argument("--out", required=True, help="new model folder")
    e.add_argument("--float32", action="store_true", help="store float32 weights (default float16: half the size)")
    commands["ensemble"] = _cmd_ensemble
    p = sub.add_parser("models", help="list the shipped models (usable as --model NAME) with their headline figures")
    p.add_argument("--json", action="store_true", help="JSON instead of a Markdown table")
    p.add_argument("--link-prefix", default="", help="prefix of the card links in the Markdown table (e.g. ../../)")
    commands["models"] = _cmd_models
