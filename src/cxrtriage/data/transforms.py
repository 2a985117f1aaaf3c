"""Preprocessing and augmentation, as composable callables.

The same :func:`preprocess` runs in training (after augmentation), in
evaluation, in ``cxr predict`` and in the server, so a model always sees its
input prepared one way.

Intensity normalisation: global histogram equalisation by default. Chest
X-rays from other sites differ mostly in exposure, contrast and
post-processing; equalisation maps every image to a near-uniform intensity
histogram, which removes most of that difference. Histogram equalisation for
CXR classifiers is studied in Rahman et al., "Exploring the effect of image
enhancement techniques on COVID-19 detection using chest X-ray images",
Computers in Biology and Medicine 132:104319, 2021.

For lung-only input (``input: lungs``, outside the lungs 0) the global
equalisation spends the black background's share of the histogram on the
lowest grey levels, so the lung pixels land in ``[255 * (1 - f), 255]`` for a
lung fraction ``f``: the lungs get ``f`` of the range (about a quarter) and
their brightness encodes the mask's area (and so the segmenter that drew
it). ``equalize-lungs`` equalises over the nonzero pixels only and leaves 0 at
0.
"""

from __future__ import annotations

import io
import random
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from cxrtriage.config import AUGMENT_LEVELS, INTENSITY_METHODS
from cxrtriage.data.cache import resize_gray

if TYPE_CHECKING:  # torch and torchvision are only imported by the training transforms, not by inference
    import torch
    from torchvision.transforms import v2

__all__ = [
    "INTENSITY_METHODS",
    "equalize_nonzero",
    "normalize_intensity",
    "preprocess",
    "RandomGamma",
    "RandomBlurOrSharpen",
    "RandomCLAHE",
    "RandomGaussianNoise",
    "RandomJPEG",
    "IntensityNormalize",
    "ToNormalizedTensor",
    "build_train_transform",
]


def normalize_intensity(img: np.ndarray, method: str) -> np.ndarray:
    """Normalise the intensities of one grayscale image.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8`` array ``(H, W)``.
    method : {"equalize", "equalize-lungs", "minmax", "none"}
        ``equalize``: global histogram equalisation (PIL ``ImageOps.equalize``);
        ``equalize-lungs``: histogram equalisation over the nonzero pixels only, onto 1-255 (each grey
        level to the midpoint of its cumulative share); pixels at 0 (outside the lungs of a lung-only
        image) stay 0. On an image without zeros it is a global equalisation onto 1-255;
        ``minmax``: stretch the 0.5th-99.5th percentiles to 0-255;
        ``none``: unchanged.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array ``(H, W)``.

    Raises
    ------
    ValueError
        Unknown ``method``.
    """
    if method == "none":
        return img
    if method == "equalize":
        return np.asarray(ImageOps.equalize(Image.fromarray(img)))
    if method == "equalize-lungs":
        return equalize_nonzero(img)
    if method == "minmax":
        lo, hi = np.percentile(img, [0.5, 99.5])
        if hi <= lo:
            return img
        out = (img.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(np.round(out), 0, 255).astype(np.uint8)
    raise ValueError(f"unknown intensity normalisation {method!r}; choose from {INTENSITY_METHODS}")


def equalize_nonzero(img: np.ndarray) -> np.ndarray:
    """Histogram-equalise the nonzero pixels of a ``uint8`` image; zeros stay zero.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8`` array ``(H, W)``; 0 marks pixels outside the region (a lung-only image's background).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array ``(H, W)``: grey level ``v > 0`` maps to ``round(1 + 254 * (C(v) - h(v) / 2) / n)``
        with ``h`` the histogram of the nonzero pixels, ``C`` its cumulative sum and ``n`` their count, so
        the nonzero pixels spread near-uniformly over 1-255 whatever the region's area. An image with no
        nonzero pixel is returned unchanged.

    Notes
    -----
    Not PIL's ``ImageOps.equalize(img, mask=img > 0)``: that one maps the darkest lung grey level to 0,
    which then reads as outside the lungs (427 of 12,956 lung pixels of an RSNA image); here the lungs
    keep 1-255 and 0 stays the background's alone.
    """
    hist = np.bincount(img.ravel(), minlength=256).astype(np.float64)
    hist[0] = 0.0
    n = hist.sum()
    if n == 0:
        return img
    cdf = np.cumsum(hist)
    lut = np.clip(np.round(1.0 + 254.0 * (cdf - hist / 2.0) / n), 1, 255).astype(np.uint8)
    lut[0] = 0
    return lut[img]


def preprocess(img: np.ndarray, image_size: int, intensity: str, mean: float = 0.5, std: float = 0.5) -> np.ndarray:
    """Turn a decoded grayscale image into model input.

    Resize (squash) to ``image_size``, normalise intensities, scale to [0, 1]
    and standardise with ``(x - mean) / std``.

    Parameters
    ----------
    img : numpy.ndarray
        ``uint8`` array ``(H, W)`` of any size.
    image_size : int
        Side of the square model input, pixels.
    intensity : str
        See :func:`normalize_intensity`.
    mean, std : float
        Standardisation constants on the [0, 1] scale (0.5 / 0.5 for the
        EfficientNet-Lite ImageNet weights).

    Returns
    -------
    numpy.ndarray
        ``float32`` array ``(1, image_size, image_size)``, values in
        ``[(0 - mean) / std, (1 - mean) / std]``.
    """
    x = normalize_intensity(resize_gray(img, image_size), intensity).astype(np.float32) / 255.0
    return ((x - mean) / std)[None]


class RandomGamma:
    """Random gamma correction of a PIL grayscale image, ``out = in ** gamma``.

    Parameters
    ----------
    gamma_range : (float, float)
        Gamma is drawn log-uniformly from this range.
    p : float
        Probability of applying it.
    """

    def __init__(self, gamma_range: tuple[float, float] = (0.7, 1.5), p: float = 0.5):
        self.log_lo, self.log_hi = np.log(gamma_range[0]), np.log(gamma_range[1])
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        gamma = float(np.exp(random.uniform(self.log_lo, self.log_hi)))
        lut = [min(255, int(round(255.0 * (i / 255.0) ** gamma))) for i in range(256)]
        return img.point(lut)


class RandomBlurOrSharpen:
    """Randomly blur or sharpen a PIL image, imitating different detectors and resampling.

    Parameters
    ----------
    p : float
        Probability of applying either; blur and sharpen are equally likely.
    max_radius : float
        Largest Gaussian blur radius in pixels.
    """

    def __init__(self, p: float = 0.3, max_radius: float = 1.2):
        self.p, self.max_radius = p, max_radius

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        if random.random() < 0.5:
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.3, self.max_radius)))
        return img.filter(ImageFilter.UnsharpMask(radius=2, percent=random.randint(50, 150), threshold=2))


class RandomCLAHE:
    """Contrast-limited adaptive histogram equalisation (CLAHE) of a PIL ``L`` image, applied at random.

    Imitates the local-contrast post-processing that X-ray vendors apply (Zuiderveld, "Contrast Limited
    Adaptive Histogram Equalization", Graphics Gems IV, 1994); computed by OpenCV's ``createCLAHE``.

    Parameters
    ----------
    p : float
        Probability of applying it.
    clip_range : (float, float)
        The clip limit is drawn uniformly from this range (OpenCV units: multiples of the mean bin count).
    tiles : int
        Tile grid ``tiles x tiles``.
    """

    def __init__(self, p: float = 0.3, clip_range: tuple[float, float] = (1.0, 3.0), tiles: int = 8):
        self.p, self.clip_range, self.tiles = p, clip_range, tiles

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        import cv2

        clahe = cv2.createCLAHE(clipLimit=random.uniform(*self.clip_range), tileGridSize=(self.tiles, self.tiles))
        return Image.fromarray(clahe.apply(np.asarray(img, dtype=np.uint8)))


class RandomGaussianNoise:
    """Additive Gaussian noise on a PIL ``L`` image (quantum noise of a low-dose exposure), applied at random.

    Parameters
    ----------
    p : float
        Probability of applying it.
    max_sigma : float
        The noise standard deviation is drawn uniformly from ``[0, max_sigma]``, in grey levels (0-255).
    """

    def __init__(self, p: float = 0.3, max_sigma: float = 8.0):
        self.p, self.max_sigma = p, max_sigma

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        x = np.asarray(img, dtype=np.float32)
        sigma = random.uniform(0.0, self.max_sigma)
        noise = np.random.default_rng(random.getrandbits(32)).normal(0.0, sigma, x.shape)
        return Image.fromarray(np.clip(x + noise, 0, 255).astype(np.uint8))


class RandomJPEG:
    """JPEG re-compression of a PIL ``L`` image at a random quality, applied at random.

    Images collected from publications and the web have been through one or more lossy JPEG encodings;
    training on re-compressed copies keeps the block artefacts from becoming a cue.

    Parameters
    ----------
    p : float
        Probability of applying it.
    quality_range : (int, int)
        Inclusive JPEG quality range (Pillow's 1-95 scale).
    """

    def __init__(self, p: float = 0.3, quality_range: tuple[int, int] = (30, 90)):
        self.p, self.quality_range = p, quality_range

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=random.randint(*self.quality_range))
        buf.seek(0)
        return Image.open(buf).convert("L")


class IntensityNormalize:
    """Callable wrapper of :func:`normalize_intensity` for PIL images."""

    def __init__(self, method: str):
        normalize_intensity(np.zeros((2, 2), np.uint8), method)  # validate early
        self.method = method

    def __call__(self, img: Image.Image) -> Image.Image:
        return Image.fromarray(normalize_intensity(np.asarray(img), self.method))


class ToNormalizedTensor:
    """PIL grayscale image -> ``float32`` tensor ``(1, H, W)`` standardised by ``(x/255 - mean) / std``."""

    def __init__(self, mean: float = 0.5, std: float = 0.5):
        self.mean, self.std = mean, std

    def __call__(self, img: Image.Image) -> torch.Tensor:
        import torch

        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]
        return (x - self.mean) / self.std


def build_train_transform(
    intensity: str = "equalize",
    hflip: bool = False,
    mean: float = 0.5,
    std: float = 0.5,
    augment: str = "standard",
    image_size: int | None = None,
) -> v2.Compose:
    """Training augmentation for a cached ``uint8`` image (as PIL).

    ``standard``: rotation +/-10 deg, translation 10 %, zoom 10 %, shear 5 deg;
    blur or sharpen, then the intensity normalisation, then mild gamma /
    brightness / contrast jitter so that the model does not depend on a
    perfect normalisation.

    ``strong`` adds what differs between sites and collections: JPEG
    re-compression (quality 30-90) first, a random resized crop (70-100 % of
    the area, aspect 0.85-1.18; collimation and field of view) in place of the
    zoom, CLAHE (vendor post-processing) before the normalisation, and
    Gaussian noise (sigma up to 8 grey levels) at the end. Each of these is
    applied with probability 0.3 except the crop (always).

    Horizontal flip only when asked (it moves the heart to the right).

    Parameters
    ----------
    intensity : str
        One of :data:`INTENSITY_METHODS`.
    hflip : bool
    mean, std : float
        Standardisation of the ``[0, 1]`` intensities.
    augment : str
        One of :data:`cxrtriage.config.AUGMENT_LEVELS`.
    image_size : int, optional
        Output side of the random resized crop (``strong``); default: the input's size.

    Returns
    -------
    torchvision.transforms.v2.Compose
        Maps a PIL ``L`` image to a ``float32`` tensor ``(1, H, W)``.

    Raises
    ------
    ValueError
        Unknown ``augment`` or ``intensity``.
    """
    from torchvision.transforms import v2

    if augment not in AUGMENT_LEVELS:
        raise ValueError(f"unknown augmentation level {augment!r}; choose from {', '.join(AUGMENT_LEVELS)}")
    strong = augment == "strong"
    steps: list = []
    if strong:
        steps.append(RandomJPEG(p=0.3))
        steps.append(v2.RandomAffine(degrees=10, translate=(0.05, 0.05), shear=5))
        if image_size:
            steps.append(v2.RandomResizedCrop(image_size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True))
        else:
            steps.append(_SameSizeResizedCrop())
    else:
        steps.append(v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=5))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(RandomBlurOrSharpen(p=0.3))
    if strong:
        steps.append(RandomCLAHE(p=0.3))
    steps += [
        IntensityNormalize(intensity),
        RandomGamma((0.75, 1.35), p=0.5),
        v2.ColorJitter(brightness=0.15, contrast=0.15),
    ]
    if strong:
        steps.append(RandomGaussianNoise(p=0.3))
    steps.append(ToNormalizedTensor(mean, std))
    return v2.Compose(steps)


class _SameSizeResizedCrop:
    """``RandomResizedCrop`` back to the input image's own size (when the size is not known in advance)."""

    def __call__(self, img: Image.Image) -> Image.Image:
        from torchvision.transforms import v2

        crop = v2.RandomResizedCrop(img.size[::-1], scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True)
        return crop(img)
