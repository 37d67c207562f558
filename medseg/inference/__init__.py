"""Inference: trained run folders -> label maps of new scans in their own geometry, one run or an
ensemble, case by case through batches that survive a bad case."""

from medseg.inference.batch import BatchReport, predict_batch
from medseg.inference.ensemble import Ensemble, expand_models
from medseg.inference.predictor import CasePrediction, Predictor, resolve_device

__all__ = ["BatchReport", "CasePrediction", "Ensemble", "Predictor", "expand_models", "predict_batch",
           "resolve_device"]
