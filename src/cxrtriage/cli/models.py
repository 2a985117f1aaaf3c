"""``cxr models``: the shipped models and their headline figures (a plugin of :mod:`cxrtriage.cli`)."""

from __future__ import annotations

import json

__all__ = ["register", "shipped_model_rows", "shipped_models_markdown"]


def shipped_model_rows() -> list[dict]:
    """One row per shipped model, read from its ``config.json`` and ``model_card.json``.

    Returns
    -------
    list of dict
        Keys ``name, task, classes, arch, image_size, size_mb, validation, test,
        ece, card`` (strings; ``–`` where the card has no such figure). The
        headline is AUROC (macro AUROC for multi-class tasks) with its 95 %
        bootstrap interval, plus sensitivity (macro sensitivity).
    """
    from cxrtriage.config import ModelConfig
    from cxrtriage.metrics.intervals import format_ci
    from cxrtriage.models.bundle import shipped_models, zoo_dir
    from cxrtriage.tasks import get_task

    def fmt(block: dict | None, key: str) -> str:
        block = block or {}
        # model cards written before one metric vocabulary (issue 14) name multi-class AUROC "macro_auroc"
        m = block.get(key) or (block.get("macro_auroc") if key == "auroc" else None)
        return f"{key} {format_ci(m)}" if m and m.get("value") is not None else "–"

    rows = []
    for name in shipped_models():
        d = zoo_dir() / name
        cfg = ModelConfig.load(d / "config.json")
        card_path = d / "model_card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        keys = (
            ("auroc", "sensitivity", "specificity") if get_task(cfg.task).is_binary else ("auroc", "macro_sensitivity")
        )
        cal = card.get("calibration") or {}
        rows.append(
            {
                "name": name,
                "task": cfg.task,
                "classes": ", ".join(cfg.classes),
                "arch": cfg.arch,
                "image_size": f"{cfg.image_size} px",
                "size_mb": f"{(d / 'model.pt').stat().st_size / 1e6:.1f}",
                "validation": "; ".join(fmt(card.get("validation"), k) for k in keys),
                "test": "; ".join(fmt(card.get("test"), k) for k in keys)
                if card.get("test")
                else "– (no held-out test in the card)",
                "ece": f"{cal['ece_before']:.3f} → {cal['ece_after']:.3f}" if "ece_before" in cal else "–",
                "card": str((d / "model_card.md").relative_to(zoo_dir().parent.parent.parent))
                if (d / "model_card.md").is_file()
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
        "ECE val before → after",
        "card",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in shipped_model_rows():
        card = f"[card]({link_prefix}{r['card']})" if r["card"] != "–" else "–"
        lines.append(
            f"| {r['name']} | {r['task']} | {r['image_size']} | {r['size_mb']} | {r['validation']} | "
            f"{r['test']} | {r['ece']} | {card} |"
        )
    return "\n".join(lines) + "\n"


def _cmd_models(a) -> int:
    if a.json:
        print(json.dumps(shipped_model_rows(), indent=1, ensure_ascii=False))
    else:
        print(shipped_models_markdown(a.link_prefix), end="")
    return 0


def register(sub, commands: dict) -> None:
    """Add ``models`` to the ``cxr`` parser."""
    p = sub.add_parser("models", help="list the shipped models (usable as --model NAME) with their headline figures")
    p.add_argument("--json", action="store_true", help="JSON instead of a Markdown table")
    p.add_argument("--link-prefix", default="", help="prefix of the card links in the Markdown table (e.g. ../../)")
    commands["models"] = _cmd_models
