"""Gate 2: population applicability, "is this chest radiograph of a child or of an adult?" (``cxr fit-population``).

Each model declares the population it was validated on (``population`` in its
``config.json``, :class:`cxrtriage.config.ModelConfig`). This gate tells the
server which population an image belongs to, so that a model's result on an
image of another population is shown with an explicit warning instead of
silently (:mod:`cxrtriage.serve.service`).

Method: the same frozen features as gate 1 (:class:`cxrtriage.ood.gate.GateFeatures`,
computed once per image for both gates), followed by the lung segmenter's shape
statistics of the image (:func:`cxrtriage.segment.postprocess.lung_shape_features`:
how much of the frame the lungs fill and where they sit; a child's radiograph holds
more of the arms, neck and abdomen), and the same linear scorer
(:class:`cxrtriage.ood.gate.CxrGate`: standardisation + logistic regression,
class-balanced, its L2 strength chosen on the threshold part); the score is the
log-odds of "pediatric". A gate fitted without the shape statistics (1,280
coefficients) still loads and scores from the image features alone.

Data (``../shared/data``): pediatric = Kermany (Guangzhou Women and Children's
Medical Center, ages 1-5, all of it); adult = COVID-19 Radiography Database
Normal and COVID (the Viral_Pneumonia class is left out: it is Kermany's own
pediatric images), NIH ChestX-ray14 (64 px subset, ages >= 18 in the sample)
and ieee8023 covid-chestxray frontal views of patients aged >= 18.

Caveat (source confound): every pediatric image comes from one hospital and
one dataset, so "pediatric vs adult" is here also "Kermany vs the other
sources"; the classifier may partly recognise the source (scanner,
processing, resolution) rather than age. That is acceptable for routing
images to the models validated on those very sources, and it is stated with
the figures (``docs/results/population-gate.json``); it is not an age
estimator.

Parts: the key of an image (patient id, else file path) goes to ``fit`` /
``threshold`` / ``test`` by :func:`cxrtriage.ood.gate.gate_part`, the same
split as gate 1, so the test part is kept apart from the fitting data of
both gates. The threshold is chosen on the threshold part only, by
:func:`minimax_threshold`: the largest misrouted rate over the sources (each
Kermany class, each adult source) is made as small as possible, so no
source, e.g. the pediatric normals, is misrouted selectively.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from cxrtriage.ood.gate import CxrGate, GateFeatures, gate_part, read_gate_rows, read_gray
from cxrtriage.segment.postprocess import LUNG_SHAPE_FEATURES, LungMask, lung_shape_features

__all__ = [
    "POPULATIONS",
    "POPULATION_DIR",
    "minimax_threshold",
    "PopulationGate",
    "fit_population",
    "load_population_gate",
    "population_rows",
    "population_warning",
]

log = logging.getLogger(__name__)

#: Folder of the shipped population gate (``gate.npz``, ``gate.json``, as gate 1's).
POPULATION_DIR = Path(__file__).parent / "population_gate"
#: The populations a model may declare (``ModelConfig.population``) and the gate tells apart.
POPULATIONS = ("pediatric", "adult")
#: Youngest age (years) of an adult in the ieee8023 manifest.
ADULT_AGE = 18


class PopulationGate(CxrGate):
    """Gate 2: linear scorer on gate 1's features (and lung shape); score = log-odds of "pediatric".

    Same attributes as :class:`cxrtriage.ood.gate.CxrGate`; ``threshold`` separates
    pediatric (score >= threshold) from adult images. ``mean``, ``scale`` and ``coef`` have
    1280 entries (image features only) or 1280 + ``len(LUNG_SHAPE_FEATURES)`` (image features,
    then :func:`cxrtriage.segment.postprocess.lung_shape_features`).
    """

    @property
    def uses_lung_shape(self) -> bool:
        """The gate needs the lung mask's shape statistics beside the image features."""
        return len(self.coef) > GateFeatures.dim

    def inputs(self, feats: np.ndarray, masks: list[LungMask | None] | None = None) -> np.ndarray:
        """The gate's input rows: image features, followed by lung shape statistics when it uses them.

        Parameters
        ----------
        feats : numpy.ndarray
            ``float32 (N, 1280)`` features of :class:`cxrtriage.ood.gate.GateFeatures`.
        masks : list of LungMask or None, optional
            The segmenter's mask of each image (None for an image without one: all-zero statistics).

        Returns
        -------
        numpy.ndarray
            ``float64 (N, D)``, D = ``len(self.coef)``.

        Raises
        ------
        ValueError
            The gate uses lung shape and ``masks`` is missing or of another length.
        """
        x = np.asarray(feats, np.float64)
        if not self.uses_lung_shape:
            return x
        if masks is None or len(masks) != len(x):
            raise ValueError(f"gate 2 needs one lung mask per image ({len(x)} images, masks: {masks and len(masks)})")
        shape = np.stack(
            [lung_shape_features(m.mask) if m is not None else np.zeros(len(LUNG_SHAPE_FEATURES)) for m in masks]
        )
        return np.hstack([x, shape])

    def population_of(
        self, feats: np.ndarray, masks: list[LungMask | None] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """Population of each image from its pooled gate features (and lung masks).

        Parameters
        ----------
        feats : numpy.ndarray
            ``float32 (N, 1280)`` features of :class:`cxrtriage.ood.gate.GateFeatures`.
        masks : list of LungMask or None, optional
            Needed when :attr:`uses_lung_shape` (see :meth:`inputs`).

        Returns
        -------
        (populations, scores) : (list of str, numpy.ndarray)
            ``"pediatric"`` or ``"adult"`` per image; ``float64 (N,)`` log-odds of pediatric.

        Raises
        ------
        ValueError
            Masks needed and missing (:meth:`inputs`).
        """
        s = self.score(self.inputs(feats, masks))
        return ["pediatric" if v >= self.threshold else "adult" for v in s], s


def load_population_gate(folder: str | Path | None = None) -> PopulationGate | None:
    """The shipped population gate (or the one in ``folder``), or None when it has not been fitted."""
    d = Path(folder) if folder is not None else POPULATION_DIR
    if not (d / "gate.npz").is_file() or not (d / "gate.json").is_file():
        return None
    return PopulationGate.load(d)


def population_warning(model_population: str | None, image_population: str | None) -> str | None:
    """The warning of a model's result on an image of another population, or None when it applies.

    Parameters
    ----------
    model_population : str or None
        ``ModelConfig.population``; None: not declared (never warned).
    image_population : str or None
        From :meth:`PopulationGate.population_of`; None: not checked.

    Returns
    -------
    str or None
        E.g. ``"outside the validated population: pediatric model, adult image"``.
    """
    if model_population is None or image_population is None or model_population == image_population:
        return None
    return f"outside the validated population: {model_population} model, {image_population} image"


def _ieee_adult_paths(data_root: Path) -> set[Path]:
    d = data_root / "ieee8023-cxr"
    with open(d / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = set()
    for r in rows:
        try:
            if float(r.get("age") or "nan") >= ADULT_AGE:
                out.add(d / r["path"])
        except ValueError:
            continue
    return out


def population_rows(data_root: str | Path) -> list[tuple[str, str, str, Path]]:
    """Every usable image of known population under ``data_root``.

    Parameters
    ----------
    data_root : path
        Folder holding the datasets (each with ``manifest.csv``); missing ones are skipped.

    Returns
    -------
    list of (population, source, key, path)
        ``population`` in :data:`POPULATIONS`; ``source`` the dataset (and class, for Kermany and
        COVID-19 Radiography); ``key`` the unit of :func:`cxrtriage.ood.gate.gate_part`.
    """
    root = Path(data_root)
    out: list[tuple[str, str, str, Path]] = []
    if (root / "kermany-pneumonia" / "manifest.csv").is_file():
        with open(root / "kermany-pneumonia" / "manifest.csv", newline="") as f:
            label = {root / "kermany-pneumonia" / r["path"]: r["label"] for r in csv.DictReader(f)}
        out += [
            ("pediatric", f"kermany-pneumonia/{label[p]}", k, p)
            for _, k, p in read_gate_rows(root, "kermany-pneumonia")
        ]
    if (root / "covid19-radiography" / "manifest.csv").is_file():
        out += [
            ("adult", pop, k, p)
            for pop, k, p in read_gate_rows(root, "covid19-radiography")
            if pop.endswith(("/Normal", "/COVID"))
        ]
    if (root / "nih-cxr14-normal-abnormal-64px" / "manifest.csv").is_file():
        out += [("adult", pop, k, p) for pop, k, p in read_gate_rows(root, "nih-cxr14-normal-abnormal-64px")]
    if (root / "ieee8023-cxr" / "manifest.csv").is_file():
        adults = _ieee_adult_paths(root)
        out += [("adult", pop, k, p) for pop, k, p in read_gate_rows(root, "ieee8023-cxr") if p in adults]
    return out


def _sample(rows: list[tuple[str, str, str, Path]], per_source: int, seed: int) -> list[tuple[str, str, str, Path]]:
    rng = np.random.default_rng(seed)
    groups: dict[str, list[tuple[str, str, str, Path]]] = {}
    for r in rows:
        groups.setdefault(r[1], []).append(r)
    out: list[tuple[str, str, str, Path]] = []
    for _src, rs in sorted(groups.items()):
        pick = rng.choice(len(rs), min(per_source, len(rs)), replace=False)
        out.extend(rs[i] for i in sorted(pick))
    return out


def _rates(called_other: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    return {
        k: {
            "n": int((groups == k).sum()),
            "misrouted": int(called_other[groups == k].sum()),
            "misrouted_rate": float(called_other[groups == k].mean()),
        }
        for k in sorted(set(groups.tolist()))
    }


def minimax_threshold(scores: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The threshold that minimises the largest misrouted rate over the groups.

    Parameters
    ----------
    scores : numpy.ndarray
        ``float (N,)`` log-odds of the positive population.
    y : numpy.ndarray
        ``int (N,)``: 1 positive (score >= threshold is right), 0 negative.
    groups : numpy.ndarray
        ``str (N,)`` source of each image; each group's misrouted rate counts once, whatever its size.

    Returns
    -------
    float
        Midpoint between two consecutive sorted scores (ties: the middle of the best range), so that no
        source loses more than the others.
    """
    order = np.unique(scores)
    cands = np.concatenate([[order[0] - 1.0], (order[:-1] + order[1:]) / 2, [order[-1] + 1.0]])
    keys = sorted(set(groups.tolist()))
    worst = np.empty(len(cands))
    for i, t in enumerate(cands):
        wrong = np.where(y == 1, scores < t, scores >= t)
        worst[i] = max(float(wrong[groups == k].mean()) for k in keys)
    best = np.flatnonzero(worst == worst.min())
    return float(cands[best[len(best) // 2]])


def fit_population(
    data_root: str | Path,
    out_dir: str | Path = POPULATION_DIR,
    *,
    per_source: int = 5000,
    seed: int = 0,
    Cs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    lung_shape: bool = True,
    features: GateFeatures | None = None,
) -> dict:
    """Fit gate 2 on the fit part, choose its L2 strength and threshold on the threshold part, measure the test part.

    Parameters
    ----------
    data_root : path
        Folder with the chest X-ray datasets (:func:`population_rows`).
    out_dir : path
        Where ``gate.npz`` and ``gate.json`` are written.
    per_source : int
        At most this many images drawn per source (dataset, or dataset class for Kermany and COVID-19
        Radiography); the default takes every image of the shared datasets.
    seed : int
    Cs : tuple of float
        Inverse L2 strengths tried; the one with the smallest largest misrouted rate over the sources of the
        threshold part wins (ties: the strongest regularisation).
    lung_shape : bool
        Append the lung segmenter's shape statistics to the image features (needs the shipped segmenter).
    features : GateFeatures, optional
        Feature extractor (built when not given).

    Returns
    -------
    dict
        The content of ``gate.json``: threshold, counts per part, misrouted rates per source on the
        threshold and test parts (a pediatric image called adult, or the reverse).

    Raises
    ------
    ValueError
        No image of one of the two populations under ``data_root``, or an empty ``Cs``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if not Cs:
        raise ValueError("Cs: at least one regularisation strength")
    rows = _sample(population_rows(data_root), per_source, seed)
    pops = np.array([r[0] for r in rows])
    if not {"pediatric", "adult"} <= set(pops.tolist()):
        raise ValueError(f"{data_root}: need pediatric (kermany-pneumonia) and adult chest X-ray datasets")
    src = np.array([r[1] for r in rows])
    parts = np.array([gate_part(r[2]) for r in rows])
    y = (pops == "pediatric").astype(int)
    images = [read_gray(r[3]) for r in rows]
    feats = np.asarray((features or GateFeatures())(images), np.float64)
    segmenter = None
    if lung_shape:
        from cxrtriage.segment.runtime import load_segmenter

        segmenter = load_segmenter()
        masks: list[LungMask] = []
        for i in range(0, len(images), 64):
            masks.extend(segmenter.segment_batch(images[i : i + 64]))
        feats = np.hstack([feats, np.stack([lung_shape_features(m.mask) for m in masks])])
    del images

    fit, thr = parts == "fit", parts == "threshold"
    scaler = StandardScaler().fit(feats[fit])
    z = scaler.transform(feats)
    trials = []
    for C in sorted(Cs):
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit(z[fit], y[fit])
        s = clf.decision_function(z)
        t = minimax_threshold(s[thr], y[thr], src[thr])
        wrong = np.where(y == 1, s < t, s >= t)
        worst = max(float(wrong[thr & (src == k)].mean()) for k in sorted(set(src[thr].tolist())))
        trials.append((worst, C, clf, t))
    worst_thr, C, clf, threshold = min(trials, key=lambda r: (r[0], r[1]))
    gate = PopulationGate(scaler.mean_, scaler.scale_, clf.coef_[0], float(clf.intercept_[0]), threshold)
    s = gate.score(feats)
    called_pediatric = s >= gate.threshold
    misrouted = np.where(y == 1, ~called_pediatric, called_pediatric)

    def report(part: str) -> dict:
        m = parts == part
        return {
            "by_source": _rates(misrouted[m], src[m]),
            "pediatric_called_adult": float(misrouted[m & (y == 1)].mean()),
            "adult_called_pediatric": float(misrouted[m & (y == 0)].mean()),
        }

    gate.info = {
        "method": "logistic regression (scikit-learn, class-balanced, L2) on gate 1's standardised pooled features of "
        "the frozen ImageNet EfficientNet-Lite0"
        + (" and the lung segmenter's shape statistics (lung_shape_features)" if lung_shape else "")
        + "; score = log-odds of pediatric",
        "features": ["1280 pooled image features", *(LUNG_SHAPE_FEATURES if lung_shape else ())],
        "segmenter": segmenter.config.version if segmenter is not None else None,
        # the version string survives a re-quantisation; the ONNX checksum does not
        "segmenter_onnx_sha256": segmenter.bundle.onnx_sha256 if segmenter is not None else None,
        "C": C,
        "C_trials": {str(c): round(w, 4) for w, c, _, _ in trials},
        "C_rule": "the C with the smallest largest misrouted rate over the sources of the threshold part",
        "seed": seed,
        "positive": "pediatric",
        "threshold_rule": "minimax on the threshold part: the largest misrouted rate over the sources (Kermany NORMAL, "
        "Kermany PNEUMONIA, each adult source) is as small as possible",
        "parts": "gate 1's split: SHA-256 of patient id (or file path): 60 % fit, 20 % threshold, 20 % test",
        "n": {
            p: {"pediatric": int(((parts == p) & (y == 1)).sum()), "adult": int(((parts == p) & (y == 0)).sum())}
            for p in ("fit", "threshold", "test")
        },
        "sources": {
            "pediatric": "../shared/data/kermany-pneumonia (NORMAL, PNEUMONIA)",
            "adult": "../shared/data: covid19-radiography Normal and COVID (Viral_Pneumonia left out: Kermany images), "
            f"nih-cxr14-normal-abnormal-64px, ieee8023-cxr frontal views aged >= {ADULT_AGE}; "
            f"at most {per_source} drawn per source",
        },
        "caveat": "source confound: all pediatric images come from one dataset (Kermany, one hospital), so the "
        "classifier also separates Kermany from the other sources; accepted for routing images to the models "
        "validated on these sources, not an age estimator. rsna-lungs adults are lung-only images (no full frame) "
        "and cannot join an image-level gate",
        "threshold_part": report("threshold"),
        "test_part": report("test"),
    }
    gate.save(out_dir)
    return dict(gate.info, threshold=gate.threshold)
