"""Out-of-distribution detection: refuse inputs that are not chest radiographs."""

from cxrtriage.ood.colour import COLOURFULNESS_LIMIT, colourfulness, colourfulness_of_bytes
from cxrtriage.ood.mahalanobis import OOD_METHOD, OOD_NPZ, MahalanobisDetector, pooled_features

__all__ = [
    "COLOURFULNESS_LIMIT",
    "MahalanobisDetector",
    "OOD_METHOD",
    "OOD_NPZ",
    "colourfulness",
    "colourfulness_of_bytes",
    "pooled_features",
]
