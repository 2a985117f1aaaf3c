"""Datasets: discovery, decoding, caching, splits and transforms."""

from .cache import CachedImages, load_cached, resize_gray
from .discover import DatasetError, Sample, discover
from .io import ImageReadError, decode_image, read_image
from .split import patient_kfold, patient_train_val_split, train_val_from_samples
from .transforms import build_eval_transform, build_train_transform, preprocess

__all__ = [
    "CachedImages",
    "DatasetError",
    "ImageReadError",
    "Sample",
    "build_eval_transform",
    "build_train_transform",
    "decode_image",
    "discover",
    "load_cached",
    "patient_kfold",
    "patient_train_val_split",
    "preprocess",
    "read_image",
    "resize_gray",
    "train_val_from_samples",
]
