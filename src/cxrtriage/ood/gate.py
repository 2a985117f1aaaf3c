"""Gate 1: "is this a chest radiograph?", independent of any task model (``cxr fit-gate``).

Features: global average pool (1280 values) of the last feature map of the
ImageNet EfficientNet-Lite0 shipped with the package (frozen, grayscale input
resized to :data:`GATE_SIZE` px, stem filters summed over RGB), run in ONNX
Runtime (:class:`GateFeatures`; the graph is exported once from PyTorch and
shipped, so scoring needs neither PyTorch nor scikit-learn). Classifier:
scikit-learn ``StandardScaler`` + ``LogisticRegression`` (class-balanced) of
chest radiograph vs anything else; the gate's score is the classifier's
log-odds of "chest radiograph".

Data (see :func:`cxr_samples` and :func:`non_cxr_images`):

* positives: chest radiographs of every population in ``../shared/data``
  (Kermany pediatric, COVID-19 Radiography Normal/COVID/Viral pneumonia,
  NIH ChestX-ray14 64 px, ieee8023 covid-chestxray frontal views);
* negatives: images that ship inside installed packages (scikit-image
  ``data`` photos and ``lfw_subset``, scikit-learn ``load_sample_images``)
  and images drawn at run time (text pages with PIL, plots with matplotlib,
  simple synthetic grayscale patterns, elevation maps).

Every image (or all images of a patient / of a source photo) is assigned to
one part by a hash of its key (:func:`gate_part`): ``fit`` (60 %),
``threshold`` (20 %), ``test`` (20 %). The classifier sees only ``fit``; the
threshold is chosen on ``threshold`` only (at most
:data:`TARGET_REFUSAL` of the chest radiographs of each population refused);
``test`` is only measured.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

__all__ = [
    "GATE_DIR",
    "GATE_FEATURES_DIR",
    "GATE_SIZE",
    "CxrGate",
    "GateFeatures",
    "TorchGateFeatures",
    "gate_features",
    "torch_gate_features",
    "torch_gate_network",
    "gate_input",
    "gate_part",
    "cxr_samples",
    "read_gate_rows",
    "read_gray",
    "non_cxr_images",
    "load_gate",
    "fit_gate",
]

log = logging.getLogger(__name__)

#: Folder of the shipped gate (``gate.npz``: classifier; ``gate.json``: threshold and measured figures).
GATE_DIR = Path(__file__).parent / "cxr_gate"
GATE_NPZ = "gate.npz"
GATE_JSON = "gate.json"
#: Side of the square grayscale input of the feature extractor (px).
GATE_SIZE = 128
#: Folder of the feature extractor's ONNX graph (``model.onnx``) and how it was made (``export.json``).
GATE_FEATURES_DIR = Path(__file__).parent / "gate_features"
GATE_FEATURES_ONNX = "model.onnx"
GATE_FEATURES_JSON = "export.json"
#: Length of the pooled feature vector (channels of EfficientNet-Lite0's last feature map).
GATE_FEATURES_DIM = 1280
#: Largest share of the chest radiographs of a population the threshold may refuse (on the threshold part).
TARGET_REFUSAL = 0.01

#: Chest X-ray datasets (folder under the data root) and the manifest column used to name the population.
CXR_DATASETS: dict[str, str | None] = {
    "kermany-pneumonia": None,
    "covid19-radiography": "label",
    "nih-cxr14-normal-abnormal-64px": None,
    "ieee8023-cxr": None,
}
_FRONTAL = {"PA", "AP", "AP Supine"}


#: Source images whose part is set, not drawn by hash. matplotlib's two real elevation maps were the test
#: images the earlier gates let through; once they had been looked at they could no longer test anything, so they
#: are selection data now (they help choose ``C``, never fitted). The package images no version of the gate was
#: ever checked on (a disparity map, handwritten digits) are the test of kinds never seen.
PART_OVERRIDES: dict[str, str] = {
    "matplotlib:topobathy": "threshold",
    "matplotlib:jacksboro_fault_dem": "threshold",
    "skimage:motorcycle_disp.npz": "test",
    "sklearn:load_digits": "test",
}


def gate_part(key: str) -> str:
    """The part (``"fit"``, ``"threshold"`` or ``"test"``) an image key belongs to.

    Parameters
    ----------
    key : str
        Patient (or source image) identifier; all images with one key share the part.

    Returns
    -------
    str
        The part of :data:`PART_OVERRIDES` for the keys listed there; else ``"fit"`` for 60 % of keys,
        ``"threshold"`` for 20 %, ``"test"`` for 20 % (SHA-256 of the key).
    """
    if key in PART_OVERRIDES:
        return PART_OVERRIDES[key]
    h = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
    return "fit" if h < 60 else "threshold" if h < 80 else "test"


def gate_input(img: np.ndarray) -> np.ndarray:
    """Preprocess one ``uint8 (H, W)`` image to ``float32 (1, GATE_SIZE, GATE_SIZE)`` in [-1, 1].

    The whole image is resized (no crop) with PIL's bilinear filter; the
    scaling (mean = std = 0.5) is the one the packaged ImageNet weights expect.

    Raises
    ------
    ValueError
        Not a 2-D array.
    """
    a = np.asarray(img)
    if a.ndim != 2:
        raise ValueError(f"gate input must be a 2-D grayscale image, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    r = Image.fromarray(a).resize((GATE_SIZE, GATE_SIZE), Image.Resampling.BILINEAR)
    return ((np.asarray(r, dtype=np.float32) / 255.0 - 0.5) / 0.5)[None]


class GateFeatures:
    """Frozen ImageNet EfficientNet-Lite0 in ONNX Runtime: pooled features of grayscale images.

    Runs the graph shipped in :data:`GATE_FEATURES_DIR` (``model.onnx``, exported from PyTorch by
    ``scripts/export_gate_features.py``; ``export.json`` says how): input :func:`gate_input` of each image,
    output the spatial mean of the network's last feature map, ``float32 (N, 1280)``. Neither PyTorch
    nor timm is imported; :func:`torch_gate_features` is the PyTorch reference the export is checked against.

    Calls are serialised by a lock (one forward pass at a time).

    Parameters
    ----------
    threads : int, optional
        ONNX Runtime intra-op threads of this session; None: ONNX Runtime's default (one per core).
        The server uses 1: on 2 shared cores, a second thread made one image up to 20 times slower
        when other processes competed for the cores.
    path : path, optional
        Another exported graph (default :data:`GATE_FEATURES_DIR` ``/ model.onnx``).
    memory_arena : bool
        Let ONNX Runtime keep its CPU memory arena (faster for large batches, as when fitting; the server,
        one image per call, turns it off to keep its resident memory down).

    Raises
    ------
    FileNotFoundError
        No graph at ``path``.
    ValueError
        The graph's input or output is not the one described above.
    """

    dim = GATE_FEATURES_DIM

    def __init__(self, threads: int | None = None, path: str | Path | None = None, memory_arena: bool = True) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else GATE_FEATURES_DIR / GATE_FEATURES_ONNX
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} not found (run `python scripts/export_gate_features.py`)")
        so = ort.SessionOptions()
        if threads is not None:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.enable_cpu_mem_arena = memory_arena
        # idle worker threads would otherwise busy-wait after each run and take the cores from the rest
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != ["input"] or [o.name for o in outputs] != ["features"]:
            raise ValueError(f"{self.path}: expected input 'input' and output 'features'")
        if list(inputs[0].shape[1:]) != [1, GATE_SIZE, GATE_SIZE] or outputs[0].shape[-1] != self.dim:
            raise ValueError(
                f"{self.path}: input {inputs[0].shape}, output {outputs[0].shape}; "
                f"expected (N, 1, {GATE_SIZE}, {GATE_SIZE}) -> (N, {self.dim})"
            )
        self._lock = threading.Lock()
        self.threads = threads

    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Pooled features of images.

        Parameters
        ----------
        images : sequence of numpy.ndarray
            ``uint8 (H, W)`` grayscale images (any size; :func:`gate_input` resizes them).
        batch_size : int
            Images per forward pass.

        Returns
        -------
        numpy.ndarray
            ``float32 (N, 1280)``; ``(0, 1280)`` for no image.

        Raises
        ------
        ValueError
            An image that is not 2-D (:func:`gate_input`).
        """
        out = [np.zeros((0, self.dim), np.float32)]
        with self._lock:
            for i in range(0, len(images), batch_size):
                out.append(self.run_inputs(np.stack([gate_input(im) for im in images[i : i + batch_size]])))
        return np.concatenate(out)

    def run_inputs(self, x: np.ndarray) -> np.ndarray:
        """Pooled features of preprocessed images, one ONNX Runtime call (no lock: the caller serialises).

        Parameters
        ----------
        x : numpy.ndarray
            ``float32 (N, 1, GATE_SIZE, GATE_SIZE)``, rows of :func:`gate_input`; N >= 1.

        Returns
        -------
        numpy.ndarray
            ``float32 (N, 1280)``.
        """
        return np.asarray(self.session.run(["features"], {"input": np.ascontiguousarray(x, np.float32)})[0], np.float32)


def torch_gate_network() -> Any:
    """The PyTorch network behind :class:`GateFeatures` (needs torch and timm; export and checks only).

    Returns
    -------
    torch.nn.Module
        In eval mode: ``float32 (N, 1, GATE_SIZE, GATE_SIZE)`` (:func:`gate_input`) -> ``float32 (N, 1280)``,
        the spatial mean of ``forward_features`` of the packaged ImageNet EfficientNet-Lite0 (grayscale stem:
        RGB filters summed, :func:`cxrtriage.models.registry.create_model` with ``pretrained=True``).
    """
    import torch

    from cxrtriage.models.registry import create_model

    class PooledFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net: Any = create_model("efficientnet_lite0", num_classes=2, in_chans=1, pretrained=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.forward_features(x).mean(dim=(2, 3))

    return PooledFeatures().eval()


def torch_gate_features(images: Sequence[np.ndarray], batch_size: int = 64, network: Any = None) -> np.ndarray:
    """:class:`GateFeatures` computed in PyTorch (the reference its ONNX export is checked against).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        ``uint8 (H, W)`` grayscale images.
    batch_size : int
    network : torch.nn.Module, optional
        :func:`torch_gate_network` (built when not given).

    Returns
    -------
    numpy.ndarray
        ``float32 (N, 1280)``.
    """
    import torch

    net = network if network is not None else torch_gate_network()
    out = [np.zeros((0, GATE_FEATURES_DIM), np.float32)]
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.stack([gate_input(im) for im in images[i : i + batch_size]]))
            out.append(net(x).numpy().astype(np.float32))
    return np.concatenate(out)


class TorchGateFeatures:
    """:class:`GateFeatures` computed in PyTorch, for installs without ONNX Runtime (the base install).

    Same network, input and output as :class:`GateFeatures` (:func:`torch_gate_network`: the packaged
    ImageNet EfficientNet-Lite0, spatial mean of its last feature map); the two agree to float32 rounding
    (``tests/test_gate.py`` compares them). Calls are serialised by a lock. Needs torch and timm; PyTorch's
    intra-op thread count is process-wide and left as it is.
    """

    dim = GATE_FEATURES_DIM

    def __init__(self) -> None:
        self.network = torch_gate_network()
        self._lock = threading.Lock()

    def __call__(self, images: Sequence[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Pooled features ``float32 (N, 1280)`` of ``uint8 (H, W)`` grayscale images (see :class:`GateFeatures`)."""
        with self._lock:
            return torch_gate_features(images, batch_size=batch_size, network=self.network)


def gate_features(threads: int | None = None, memory_arena: bool = True) -> GateFeatures | TorchGateFeatures:
    """The gate's feature extractor: ONNX Runtime when it is installed, else PyTorch.

    The server and ``cxr fit-*`` use :class:`GateFeatures` directly (no PyTorch in the serve process);
    the Python API and ``cxr predict`` call this, so that the base install (no ``serve`` extra, hence
    no ONNX Runtime) still checks its inputs with gate 1.

    Parameters
    ----------
    threads : int, optional
        ONNX Runtime intra-op threads (ignored by the PyTorch fallback).
    memory_arena : bool
        ONNX Runtime's CPU memory arena (see :class:`GateFeatures`).

    Returns
    -------
    GateFeatures or TorchGateFeatures

    Raises
    ------
    FileNotFoundError
        ONNX Runtime is installed but the shipped graph is missing.
    ModuleNotFoundError
        Neither ONNX Runtime nor torch/timm is installed.
    """
    try:
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        return TorchGateFeatures()
    return GateFeatures(threads=threads, memory_arena=memory_arena)


@dataclass
class CxrGate:
    """Logistic regression on standardised pooled features; score = log-odds of "chest radiograph".

    Attributes
    ----------
    mean, scale : numpy.ndarray
        ``float64 (1280,)`` standardisation of the features.
    coef : numpy.ndarray
        ``float64 (1280,)`` weights on the standardised features.
    intercept : float
    threshold : float
        Images with :meth:`score` below it are refused as not a chest radiograph (log-odds).
    info : dict
        Fit details and measured figures (``gate.json``).
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float
    info: dict = field(default_factory=dict)
    features: GateFeatures | TorchGateFeatures | None = field(default=None, repr=False)

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Log-odds ``float64 (N,)`` of "chest radiograph" for pooled features ``(N, 1280)``."""
        z = (np.asarray(feats, np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept

    def score_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Log-odds ``float64 (N,)`` for ``uint8 (H, W)`` images (builds the feature extractor once)."""
        if self.features is None:
            self.features = gate_features()
        return self.score(self.features(images))

    def is_cxr(self, img: np.ndarray) -> tuple[bool, float]:
        """``(accepted, score)`` of one ``uint8 (H, W)`` image."""
        s = float(self.score_images([img])[0])
        return s >= self.threshold, s

    def refusal(self, img: np.ndarray) -> str | None:
        """The reason to refuse one ``uint8 (H, W)`` image as not a chest radiograph, or None when accepted."""
        ok, s = self.is_cxr(img)
        return None if ok else self.refusal_text(s)

    def refusal_text(self, score: float) -> str:
        """The refusal reason for a score below the threshold (log-odds)."""
        return (
            f"not a chest radiograph (gate 1: score {score:.1f} < threshold {self.threshold:.1f}, "
            "log-odds of a chest radiograph)"
        )

    def save(self, folder: str | Path) -> None:
        """Write ``gate.npz`` and ``gate.json`` into ``folder``."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            d / GATE_NPZ,
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            coef=self.coef.astype(np.float32),
            intercept=np.float64(self.intercept),
        )
        (d / GATE_JSON).write_text(json.dumps(dict(self.info, threshold=self.threshold), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path = GATE_DIR) -> Self:
        """Read a gate written by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            ``gate.npz`` or ``gate.json`` missing.
        """
        d = Path(folder)
        with np.load(d / GATE_NPZ) as z:
            arrays = {k: z[k] for k in z.files}
        info = json.loads((d / GATE_JSON).read_text())
        return cls(
            mean=arrays["mean"].astype(np.float64),
            scale=arrays["scale"].astype(np.float64),
            coef=arrays["coef"].astype(np.float64),
            intercept=float(arrays["intercept"]),
            threshold=float(info.pop("threshold")),
            info=info,
        )


def load_gate(folder: str | Path | None = None) -> CxrGate | None:
    """The shipped gate (or the one in ``folder``), or None when it has not been fitted."""
    d = Path(folder) if folder is not None else GATE_DIR
    if not (d / GATE_NPZ).is_file() or not (d / GATE_JSON).is_file():
        return None
    return CxrGate.load(d)


# -- data ------------------------------------------------------------------
def read_gate_rows(data_root: str | Path, name: str) -> list[tuple[str, str, Path]]:
    """All usable chest radiographs of one dataset of :data:`CXR_DATASETS`, in manifest order.

    Parameters
    ----------
    data_root : path
        Folder holding the dataset folder ``name`` (with ``manifest.csv``).
    name : str
        Dataset folder name, a key of :data:`CXR_DATASETS`.

    Returns
    -------
    list of (population, key, path)
        ``key`` is ``dataset:patient`` (``dataset:path`` when there is no patient id), the unit of
        :func:`gate_part`. ieee8023: frontal views only, without the images that duplicate
        COVID-19 Radiography ones.

    Raises
    ------
    FileNotFoundError
        No ``manifest.csv``.
    """
    d = Path(data_root) / name
    pop_col = CXR_DATASETS[name]
    with open(d / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if name == "ieee8023-cxr":
        rows = [r for r in rows if r.get("view") in _FRONTAL and not r.get("covid19_radiography_duplicate")]
    return [
        (f"{name}/{r[pop_col]}" if pop_col else name, f"{name}:{r.get('patient_id') or r['path']}", d / r["path"])
        for r in rows
    ]


def cxr_samples(data_root: str | Path, per_set: int = 400, seed: int = 0) -> list[tuple[str, str, Path]]:
    """Chest radiographs drawn at random from every dataset under ``data_root``.

    Parameters
    ----------
    data_root : path
        Folder holding the datasets of :data:`CXR_DATASETS` (each with ``manifest.csv``); missing ones are skipped.
    per_set : int
        Images per dataset (split evenly over the populations of a dataset with a population column).
    seed : int

    Returns
    -------
    list of (population, key, path)
        As :func:`read_gate_rows`.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, Path]] = []
    for name in CXR_DATASETS:
        if not (Path(data_root) / name / "manifest.csv").is_file():
            log.warning("%s: no manifest.csv, skipped", Path(data_root) / name)
            continue
        groups: dict[str, list[tuple[str, str, Path]]] = {}
        for row in read_gate_rows(data_root, name):
            groups.setdefault(row[0], []).append(row)
        n = max(1, per_set // len(groups))
        for _pop, rs in sorted(groups.items()):
            pick = rng.choice(len(rs), min(n, len(rs)), replace=False)
            out.extend(rs[i] for i in sorted(pick))
    return out


def read_gray(path: str | Path) -> np.ndarray:
    """``uint8 (H, W)`` grayscale of an image file (as the server decodes it)."""
    from cxrtriage.data.io import to_uint8_gray

    with Image.open(path) as im:
        im.load()
        return to_uint8_gray(im)


_WORDS = (
    "patient report study results method figure table analysis data model the of and in to a is for with as on "
    "by this that were was be are from at an or which clinical image chest page section total value mean number "
    "invoice date amount account name address signature summary discussion conclusion reference year"
).split()


def _text_page(rng: np.random.Generator) -> np.ndarray:
    w, h = int(rng.integers(300, 700)), int(rng.integers(400, 900))
    bg, fg = int(rng.integers(215, 256)), int(rng.integers(0, 70))
    if rng.random() < 0.15:  # dark-mode page
        bg, fg = 255 - bg, 255 - fg
    im = Image.new("L", (w, h), bg)
    dr = ImageDraw.Draw(im)
    size = int(rng.integers(9, 26))
    font = ImageFont.load_default(size=size)
    y = int(rng.integers(10, 60))
    margin = int(rng.integers(10, 60))
    while y < h - size:
        if rng.random() < 0.1:
            y += size
            continue
        line = " ".join(rng.choice(_WORDS, int(rng.integers(2, 14))))
        dr.text((margin, y), line, fill=fg, font=font)
        y += int(size * rng.uniform(1.2, 1.8))
    if rng.random() < 0.3:  # a table rule or box
        dr.rectangle([margin, h // 3, w - margin, h // 3 + h // 5], outline=fg, width=2)
    if rng.random() < 0.5:  # scanned look
        im = im.rotate(float(rng.uniform(-3, 3)), fillcolor=bg).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))
        a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(0, 12), (h, w))
        return np.clip(a, 0, 255).astype(np.uint8)
    return np.asarray(im)


def _plot(rng: np.random.Generator) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(rng.uniform(3, 7), rng.uniform(2.5, 5)), dpi=72)
    kind = int(rng.integers(0, 5))
    x = np.linspace(0, 10, 200)
    if kind == 0:
        for _ in range(int(rng.integers(1, 5))):
            ax.plot(x, np.sin(x * rng.uniform(0.3, 3)) * rng.uniform(0.5, 3) + rng.normal(0, 0.2, x.size))
    elif kind == 1:
        ax.scatter(rng.normal(size=200), rng.normal(size=200), s=8)
    elif kind == 2:
        ax.bar(range(8), rng.uniform(1, 10, 8))
    elif kind == 3:
        ax.hist(rng.normal(size=1000), bins=int(rng.integers(10, 50)))
    else:
        ax.imshow(rng.random((12, 12)), cmap="viridis")
    ax.set_title(" ".join(rng.choice(_WORDS, 3)))
    ax.set_xlabel(str(rng.choice(_WORDS)))
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
    plt.close(fig)
    from cxrtriage.data.io import to_uint8_gray

    return to_uint8_gray(Image.fromarray(rgba[..., :3]))


def _synthetic(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(96, 400))
    kind = int(rng.integers(0, 7))
    yy, xx = np.mgrid[0:n, 0:n] / n
    if kind == 0:
        a = rng.uniform(0, 255, (n, n))
    elif kind == 1:
        a = np.full((n, n), rng.uniform(0, 255))
    elif kind == 2:
        ang = rng.uniform(0, np.pi)
        a = 255 * ((np.cos(ang) * xx + np.sin(ang) * yy) % 1.0)
    elif kind == 3:
        k = int(rng.integers(2, 16))
        a = 255.0 * ((np.floor(xx * k) + np.floor(yy * k)) % 2)
    elif kind == 4:
        im = Image.new("L", (n, n), int(rng.integers(0, 256)))
        dr = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(2, 12))):
            x0, y0 = rng.integers(0, n, 2)
            x1, y1 = x0 + rng.integers(5, n // 2), y0 + rng.integers(5, n // 2)
            shape = dr.ellipse if rng.random() < 0.5 else dr.rectangle
            shape([int(x0), int(y0), int(x1), int(y1)], fill=int(rng.integers(0, 256)))
        a = np.asarray(im, np.float64)
    elif kind == 5:
        # random smooth field with a power-law spectrum (terrain- or cloud-like texture)
        field = _spectral_field(rng.normal(size=(n, n)), rng.uniform(1.0, 2.5))
        a = 255 * (field - field.min()) / max(float(np.ptp(field)), 1e-9)
    else:
        a = np.zeros((n, n))
        for _ in range(int(rng.integers(1, 6))):
            cx, cy, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.4)
            a += rng.uniform(50, 255) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
    a = a + rng.normal(0, rng.uniform(0, 20), a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def _spectral_field(noise: np.ndarray, beta: float) -> np.ndarray:
    """``float64 (n, n)`` white ``noise`` (n x n) filtered to the amplitude spectrum ``|f| ** -beta``."""
    n = noise.shape[0]
    f = np.fft.fftfreq(n)
    r = np.hypot(*np.meshgrid(f, f)) + 1.0 / n
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * r**-beta))


def _power_law_field(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """``float64 (n, n)`` Gaussian random field with amplitude spectrum ``|f| ** -beta``, zero mean, unit std."""
    field = _spectral_field(rng.normal(size=(n, n)), beta)
    return (field - field.mean()) / max(float(field.std()), 1e-9)


def flow_accumulation(z: np.ndarray) -> np.ndarray:
    """Cells draining through each cell of an elevation grid (D8 steepest descent), ``float64`` like ``z``.

    Every cell passes its water, plus what it received, to the steepest-descending of its 8 neighbours
    (none at a pit); the log of the result traces a dendritic drainage network (O'Callaghan & Mark 1984,
    Computer Vision, Graphics, and Image Processing 28:323-344).

    Parameters
    ----------
    z : numpy.ndarray
        ``(H, W)`` elevations (any unit).

    Returns
    -------
    numpy.ndarray
        ``float64 (H, W)``, >= 1.
    """
    h, w = z.shape
    pad = np.pad(np.asarray(z, np.float64), 1, mode="edge")
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    drop = np.stack([z - pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in offsets])
    drop /= np.array([np.hypot(dy, dx) for dy, dx in offsets])[:, None, None]
    k = drop.argmax(0)
    dy, dx = np.array(offsets)[k].transpose(2, 0, 1)
    ty = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    tx = np.clip(np.arange(w)[None] + dx, 0, w - 1)
    target = np.where(drop.max(0) <= 0, -1, ty * w + tx).ravel()
    acc = np.ones(h * w)
    for i in np.argsort(-z.ravel(), kind="stable"):  # highest first: a cell is done before its receiver
        t = target[i]
        if t >= 0:
            acc[t] += acc[i]
    return acc.reshape(h, w)


def _terrain(rng: np.random.Generator) -> np.ndarray:
    """An elevation map drawn at run time (grayscale = height), the kind of image of a DEM viewer or atlas."""
    n = int(rng.integers(128, 320))
    kind = int(rng.integers(0, 5))
    z = _power_law_field(rng, n, rng.uniform(2.0, 3.5))
    if kind <= 1:  # eroded relief: smooth hills carved by their own drainage network
        acc = np.log1p(flow_accumulation(z))
        a = z - rng.uniform(0.3, 3.0) * acc / acc.max()
    elif kind == 2:  # ridged multifractal: branching ridges or (negated) valleys
        a = sum(0.5**o * (1 - np.abs(_power_law_field(rng, n, rng.uniform(1.0, 2.0)))) for o in range(4))
        a = a if rng.random() < 0.5 else -a
    elif kind == 3:  # shaded relief (hillshade) under a random sun
        az, alt = np.radians(rng.uniform(0, 360)), np.radians(rng.uniform(20, 60))
        gy, gx = np.gradient(z * rng.uniform(5, 40))
        slope, aspect = np.pi / 2 - np.arctan(np.hypot(gx, gy)), np.arctan2(-gx, gy)
        a = np.sin(alt) * np.sin(slope) + np.cos(alt) * np.cos(slope) * np.cos(az - aspect)
    else:  # valleys along the zero crossings of a field
        a = np.abs(z) ** rng.uniform(0.3, 1.0) + rng.uniform(0, 0.5) * z
    a = np.asarray(a, np.float64)
    if rng.random() < 0.4:  # a sea: flat below a level
        a = np.maximum(a, np.quantile(a, rng.uniform(0.05, 0.4)))
    a = ((a - a.min()) / max(float(np.ptp(a)), 1e-9)) ** rng.uniform(0.6, 1.6)
    im = Image.fromarray(np.round(255 * a).astype(np.uint8))
    return np.asarray(im.resize((n, int(n * rng.uniform(0.7, 1.3))), Image.Resampling.BILINEAR))


def _crops(img: np.ndarray, rng: np.random.Generator, n: int) -> Iterable[np.ndarray]:
    h, w = img.shape
    for _ in range(n):
        f = rng.uniform(0.4, 0.9)
        ch, cw = max(8, int(h * f)), max(8, int(w * f * rng.uniform(0.8, 1.25)))
        cw = min(cw, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        c = img[y0 : y0 + ch, x0 : x0 + cw]
        yield c[:, ::-1] if rng.random() < 0.5 else c


def _stretch(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    a = np.where(np.isfinite(a), a, np.nan)  # no-data cells (NaN, inf) become the lowest value
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return np.round(255 * (np.nan_to_num(a, nan=lo) - lo) / max(hi - lo, 1e-9)).astype(np.uint8)


def _matplotlib_samples() -> list[tuple[str, str, np.ndarray]]:
    """matplotlib's ``sample_data``: photos, a logo, an MRI slice, two elevation maps (kind, key, image)."""
    try:
        import matplotlib.cbook as cbook
    except ImportError:
        return []
    from cxrtriage.data.io import to_uint8_gray

    out: list[tuple[str, str, np.ndarray]] = []
    for name, kind in (
        ("grace_hopper.jpg", "photo"),
        ("Minduka_Present_Blue_Pack.png", "photo"),
        ("logo2.png", "plot"),
    ):
        try:
            with Image.open(cbook.get_sample_data(name, asfileobj=False)) as im:
                im.load()
                out.append((kind, f"matplotlib:{name}", to_uint8_gray(im)))
        except (OSError, ValueError):
            continue
    try:
        import gzip

        with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:  # MRI head slice, 256 x 256
            mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        out.append(("mri_slice", "matplotlib:s1045.ima", _stretch(mri)))
        for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
            with np.load(cbook.get_sample_data(name, asfileobj=False)) as z:
                out.append(("elevation_map", f"matplotlib:{name.removesuffix('.npz')}", _stretch(z[key])))
    except (OSError, ValueError, KeyError):
        pass
    return out


def _unseen_package_samples(rng: np.random.Generator, crops: int) -> list[tuple[str, str, np.ndarray]]:
    """Test-only package images (:data:`PART_OVERRIDES`): scikit-image's motorcycle disparity map (a depth
    image, grayscale = distance, with crops) and 20 of scikit-learn's 8 x 8 handwritten digits (64 px)."""
    out: list[tuple[str, str, np.ndarray]] = []
    try:
        import skimage

        with np.load(Path(skimage.__file__).parent / "data" / "motorcycle_disp.npz") as z:
            disp = _stretch(z["arr_0"])
        key = "skimage:motorcycle_disp.npz"
        out.append(("depth_map", key, disp))
        out.extend(("depth_map", key, c) for c in _crops(disp, rng, crops))
    except (ImportError, OSError, KeyError):
        pass
    try:
        from sklearn.datasets import load_digits

        for d in load_digits().images[:20]:
            digit = Image.fromarray(np.round(255 - d * (255 / 16)).astype(np.uint8))  # dark ink on white
            out.append(("digit", "sklearn:load_digits", np.asarray(digit.resize((64, 64), Image.Resampling.BILINEAR))))
    except ImportError:
        pass
    return out


def non_cxr_images(seed: int = 0, rendered: int = 150, crops: int = 10) -> list[tuple[str, str, np.ndarray]]:
    """Images that are not chest radiographs: shipped with installed packages or drawn at run time.

    Parameters
    ----------
    seed : int
        Seed of the drawn images and crops (reproducible).
    rendered : int
        Images of each drawn kind (``text_page``, ``plot``, ``synthetic``, ``terrain``).
    crops : int
        Random crops (40-90 % of the side, some mirrored) added per photo; they share the photo's key.

    Returns
    -------
    list of (kind, key, image)
        ``image`` ``uint8 (H, W)``; kinds: ``photo`` (scikit-image ``data`` PNG/JPEG and scikit-learn
        ``load_sample_images``, matplotlib ``sample_data`` photos, converted to grayscale), ``mri_slice``
        (matplotlib's MRI head slice), ``elevation_map`` (matplotlib's two real elevation grids),
        ``lfw_face`` and ``lfw_nonface`` (scikit-image ``lfw_subset``, 25 x 25), ``text_page`` (PIL),
        ``plot`` (matplotlib), ``synthetic`` (noise, flat, ramps, checkerboards, shapes, power-law random
        fields, blobs), ``terrain`` (drawn elevation maps: eroded relief with drainage networks, ridged
        fields, hillshades, valley networks); test part only: ``depth_map`` (scikit-image's motorcycle
        disparity map) and ``digit`` (scikit-learn's handwritten digits).
    """
    from cxrtriage.ood.fit import natural_images

    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, np.ndarray]] = []
    for name, img, _ in natural_images():
        if name.startswith("skimage:lfw_subset"):
            i = int(name.split("[")[1].rstrip("]"))
            # lfw_subset: the first 100 are faces, the other 100 non-face patches (scikit-image docs)
            out.append(("lfw_face" if i < 100 else "lfw_nonface", name, img))
            continue
        out.append(("photo", name, img))
        out.extend(("photo", name, c) for c in _crops(img, rng, crops))
    for kind, name, img in _matplotlib_samples():
        out.append((kind, name, img))
        out.extend((kind, name, c) for c in _crops(img, rng, crops))
    for kind, fn in (("text_page", _text_page), ("plot", _plot), ("synthetic", _synthetic), ("terrain", _terrain)):
        for i in range(rendered):
            out.append((kind, f"{kind}:{seed}:{i}", fn(rng)))
    out.extend(_unseen_package_samples(rng, crops))
    return out


# -- fit -------------------------------------------------------------------
def _rates(refused: np.ndarray, groups: Sequence[str]) -> dict[str, dict]:
    g = np.asarray(groups)
    return {
        k: {
            "n": int((g == k).sum()),
            "refused": int(refused[g == k].sum()),
            "refusal_rate": float(refused[g == k].mean()),
        }
        for k in sorted(set(groups))
    }


def fit_gate(
    data_root: str | Path,
    out_dir: str | Path = GATE_DIR,
    *,
    per_set: int = 400,
    rendered: int = 150,
    seed: int = 0,
    Cs: Sequence[float] = (0.03, 0.1, 0.3, 1.0, 3.0),
) -> dict:
    """Fit, choose ``C`` and the threshold on the threshold part, measure on the test part, and save the gate.

    For each ``C`` the classifier is fitted on the fit part and its threshold set on the threshold part's chest
    radiographs; the ``C`` whose threshold accepts the fewest threshold-part non-radiographs is kept (ties: the
    smallest, i.e. the strongest regularisation). The test part is only measured.

    Parameters
    ----------
    data_root : path
        Folder with the chest X-ray datasets (:func:`cxr_samples`).
    out_dir : path
        Where ``gate.npz`` and ``gate.json`` are written.
    per_set : int
        Chest radiographs drawn per dataset.
    rendered : int
        Drawn non-radiographs per kind.
    seed : int
    Cs : sequence of float
        Candidate inverse L2 regularisation strengths of the logistic regression.

    Returns
    -------
    dict
        The content of ``gate.json``: threshold, counts per part, refusal rates per
        population / kind on the threshold and test parts.

    Raises
    ------
    ValueError
        No chest radiograph found under ``data_root``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cxr = cxr_samples(data_root, per_set, seed)
    if not cxr:
        raise ValueError(f"{data_root}: no chest X-ray dataset with a manifest.csv found")
    neg = non_cxr_images(seed, rendered)
    images = [read_gray(p) for _, _, p in cxr] + [im for _, _, im in neg]
    groups = [pop for pop, _, _ in cxr] + [k for k, _, _ in neg]
    parts = np.array([gate_part(k) for _, k, _ in cxr] + [gate_part(k) for _, k, _ in neg])
    y = np.array([1] * len(cxr) + [0] * len(neg))
    feats = GateFeatures()(images)

    fit, thr_part = parts == "fit", parts == "threshold"
    g = np.asarray(groups)
    pops = sorted({pop for pop, _, _ in cxr if (thr_part & (g == pop)).any()})
    scaler = StandardScaler().fit(feats[fit])
    z = scaler.transform(feats)

    def candidate(c: float) -> tuple[CxrGate, dict]:
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(z[fit], y[fit])
        cand = CxrGate(scaler.mean_, scaler.scale_, clf.coef_[0], float(clf.intercept_[0]), float("-inf"))
        sc = cand.score(feats)
        # highest threshold that refuses at most TARGET_REFUSAL of each population's threshold-part radiographs
        cand.threshold = min(
            float(np.quantile(sc[thr_part & (g == pop) & (y == 1)], TARGET_REFUSAL, method="lower")) for pop in pops
        )
        accepted = int((thr_part & (y == 0) & (sc >= cand.threshold)).sum())
        refused = int((thr_part & (y == 1) & (sc < cand.threshold)).sum())
        return cand, {"C": c, "threshold_part_not_cxr_accepted": accepted, "threshold_part_cxr_refused": refused}

    candidates = [candidate(c) for c in sorted(Cs)]
    gate, chosen = min(candidates, key=lambda cr: (cr[1]["threshold_part_not_cxr_accepted"], cr[1]["C"]))
    C = chosen["C"]
    s = gate.score(feats)
    refused = s < gate.threshold

    def report(part: str) -> dict:
        m = parts == part
        return {
            "chest_radiographs": _rates(refused[m & (y == 1)], list(g[m & (y == 1)])),
            "not_chest_radiographs": _rates(refused[m & (y == 0)], list(g[m & (y == 0)])),
            "chest_radiographs_refused_total": float(refused[m & (y == 1)].mean()),
            "not_chest_radiographs_refused_total": float(refused[m & (y == 0)].mean()),
            "accepted_non_cxr": [
                k for (_, k, _), r, p in zip(neg, refused[len(cxr) :], parts[len(cxr) :]) if p == part and not r
            ],
        }

    gate.info = {
        "method": "logistic regression (scikit-learn, class-balanced, L2) on standardised global-average-pooled "
        "features of the frozen ImageNet EfficientNet-Lite0 shipped with cxrtriage; score = log-odds of chest radiograph",
        "input": f"grayscale, whole image resized to {GATE_SIZE}x{GATE_SIZE} (bilinear), (x/255-0.5)/0.5",
        "C": C,
        "C_selection": [r for _, r in candidates],
        "C_rule": "fewest non-radiographs of the threshold part accepted at each C's threshold; ties: smallest C",
        "seed": seed,
        "target_refusal_per_population": TARGET_REFUSAL,
        "threshold_rule": "lowest over populations of the 1st percentile of chest-radiograph scores on the threshold part",
        "parts": "SHA-256 of patient id (or file path) / source image: 60 % fit, 20 % threshold, 20 % test; "
        "set by hand (PART_OVERRIDES): matplotlib's real elevation maps in the threshold part, scikit-image's "
        "disparity map and scikit-learn's digits in the test part",
        "n": {
            p: {"cxr": int(((parts == p) & (y == 1)).sum()), "not_cxr": int(((parts == p) & (y == 0)).sum())}
            for p in ("fit", "threshold", "test")
        },
        "sources": {
            "chest_radiographs": "../shared/data: kermany-pneumonia (pediatric), covid19-radiography (Normal, COVID, "
            "Viral_Pneumonia), nih-cxr14-normal-abnormal-64px (adult, 64 px), ieee8023-cxr (PA/AP/AP Supine views, "
            f"without COVID-19 Radiography duplicates); {per_set} drawn per dataset",
            "not_chest_radiographs": "scikit-image data PNG/JPEG photos (+ random crops), scikit-image lfw_subset "
            "(faces, non-face patches), scikit-learn load_sample_images, matplotlib sample_data (photos, logo, MRI slice, "
            "elevation maps) (+ crops); drawn at run time: text pages (PIL), plots (matplotlib), synthetic grayscale "
            f"patterns, elevation maps (eroded relief, ridged fields, hillshades); {rendered} per drawn kind",
        },
        "threshold_part": report("threshold"),
        "test_part": report("test"),
    }
    gate.save(out_dir)
    return dict(gate.info, threshold=gate.threshold)
