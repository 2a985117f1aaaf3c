"""``cxr audit``: does the model look at the lungs? (hidden lungs, source probe, heatmap in lungs); ``cxr covid-rule``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable

from cxrtriage.cli.config_args import add_device_argument, add_model_argument

__all__ = ["register"]


def _cmd_audit(a: argparse.Namespace) -> int:
    from cxrtriage.experiments.audit import run_audit
    from cxrtriage.metrics.report import Estimate, format_estimate

    command = "cxr " + " ".join(shlex.quote(x) for x in sys.argv[1:]) if sys.argv[1:] else "cxr audit"
    res = run_audit(
        a.model,
        a.data,
        a.out,
        max_images=a.max_images,
        n_boot=a.n_boot,
        source_column=a.source_column,
        fill=a.fill,
        seed=a.seed,
        write_bundle=a.write_bundle,
        cache_dir=a.cache_dir,
        command=command,
        device=a.device,
    )
    s = res.section
    print(f"audit of {s.n} images from {', '.join(s.data)}")
    for key, rep in (("original", s.original), ("lungs hidden", s.lungs_hidden), ("only lungs", s.lungs_only)):
        print(f"  AUROC {key}: {format_estimate(rep.metrics.get('auroc'))}")
    if s.source_probe:
        print(f"  source probe AUROC: {format_estimate(Estimate.from_dict(s.source_probe['auroc']))}")
    for c, e in s.cam_in_lung.items():
        print(f"  CAM mass in lungs, {c}: {format_estimate(e)}")
    print(f"  lung-mask area (chance level): {format_estimate(s.lung_area)}")
    print(f"written to {res.out}/audit.json and audit.html" + (" and the model bundle" if a.write_bundle else ""))
    return 0


def _cmd_covid_rule(a: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cxrtriage.experiments.covid_rule import covid_rule, rule_markdown, rule_summary

    passed, results = covid_rule(a.model, a.data, a.cache_dir, a.exclude_where)
    for r in results:
        auc = "n/a" if r.auroc is None else f"{r.auroc:.3f}"
        share = "n/a" if r.pneumonia_called_covid is None else f"{r.pneumonia_called_covid:.3f}"
        print(
            f"{r.name}: COVID {r.n_covid} / non-COVID {r.n_non_covid} (pneumonias {r.n_pneumonia}); "
            f"AUROC {auc}; non-COVID pneumonias called COVID {share}; {'pass' if r.passed else 'FAIL'}"
        )
    print("rule holds: the model may ship" if passed else "rule fails: the model stays withdrawn")
    if a.out:
        record = rule_summary(str(a.model), passed, results)
        record["command"] = "cxr " + " ".join(shlex.quote(x) for x in sys.argv[1:])
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
        Path(a.out).with_suffix(".md").write_text(rule_markdown(record))
    return 0 if passed else 3


def register(sub: argparse._SubParsersAction, commands: dict[str, Callable[[argparse.Namespace], int]]) -> None:
    """Add ``audit`` to the ``cxr`` parser."""
    p = sub.add_parser("audit", help="shortcut audit: hidden lungs, source probe, heatmap share in the lungs")
    add_model_argument(p)
    p.add_argument("--data", nargs="+", required=True, help="one or more dataset folders or manifests")
    p.add_argument("--out", required=True, help="output folder (audit.json, audit.html, examples/)")
    p.add_argument("--max-images", type=int, default=None, help="at most N images per dataset (classes in turn)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates of the 95%% intervals")
    p.add_argument("--source-column", default=None, help="manifest column naming each image's source")
    p.add_argument("--fill", choices=("mean", "grey"), default="mean", help="grey level of hidden pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-bundle", action="store_true", help="store the figures in the bundle, re-render the card")
    p.add_argument("--cache-dir", default=None)
    add_device_argument(p)
    commands["audit"] = _cmd_audit

    p = sub.add_parser(
        "covid-rule",
        help="the out-of-source rule of a COVID model: AUROC >= 0.80 and <= 20%% of other pneumonias called COVID",
    )
    add_model_argument(p)
    p.add_argument("--data", nargs="+", required=True, help="datasets of sources the model was not trained on")
    p.add_argument("--exclude-where", action="append", default=[], metavar="COLUMN", help="leave out rows where set")
    p.add_argument("--out", default=None, help="JSON file for the figures and the verdict (a .md table beside it)")
    p.add_argument("--cache-dir", default=None)
    commands["covid-rule"] = _cmd_covid_rule
