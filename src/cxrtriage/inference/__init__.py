"""Inference: the decision rule and the in-process predictor."""

from cxrtriage.inference.predictor import Prediction, Predictor, predictions_from_probs
from cxrtriage.metrics.decision import decide

__all__ = ["Prediction", "Predictor", "decide", "predictions_from_probs"]
