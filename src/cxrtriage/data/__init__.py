"""Datasets: discovery, decoding, caching, splits and transforms."""

from cxrtriage.data.cache import CachedImages, load_cached, resize_gray
from cxrtriage.data.discover import DatasetError, Sample, discover
from cxrtriage.data.io import ImageReadError, decode_image, read_image
from cxrtriage.data.split import patient_kfold, patient_train_val_split, train_val_from_samples
from cxrtriage.data.transforms import build_train_transform, preprocess

__all__ = [
    "CachedImages",
    "DatasetError",
    "ImageReadError",
    "Sample",
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
