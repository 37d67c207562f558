"""Inference: a trained run folder -> label maps of new scans in their own geometry."""

from medseg.inference.predictor import CasePrediction, Predictor, resolve_device

__all__ = ["CasePrediction", "Predictor", "resolve_device"]
