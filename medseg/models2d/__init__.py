"""2D semantic, instance and panoptic models behind one contract (``model.Model2D``), trained by the one
Trainer and scored alike."""

from medseg.models2d import maskrcnn, panoptic, semantic  # noqa: F401  (register the adapters)
from medseg.models2d.base import Batch2D, ClassSpec, Instances, PanopticResult, Prediction2D, Segment
from medseg.models2d.model import MODELS_2D, Model2D, build_model_2d, evenly_spaced

__all__ = [
    "MODELS_2D", "Batch2D", "ClassSpec", "Instances", "Model2D", "PanopticResult", "Prediction2D", "Segment",
    "build_model_2d", "evenly_spaced",
]
