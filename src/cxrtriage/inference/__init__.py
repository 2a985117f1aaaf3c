"""Inference: the one batched forward pass (:mod:`cxrtriage.inference.backend`) and the in-process predictor.

The decision rule lives in :mod:`cxrtriage.metrics.decision`.
"""

from cxrtriage.inference.predictor import Prediction, Predictor, predictions_from_probs

__all__ = ["Prediction", "Predictor", "predictions_from_probs"]
