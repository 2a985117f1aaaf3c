"""Inference: the decision rule and the in-process predictor."""

from .decision import decide
from .predictor import Prediction, Predictor, predictions_from_probs

__all__ = ["Prediction", "Predictor", "decide", "predictions_from_probs"]
