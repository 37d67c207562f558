"""2D semantic, instance and panoptic models behind one contract (``base``), trained and scored alike."""

from medseg.models2d import maskrcnn, panoptic, semantic  # noqa: F401  (register the adapters)
from medseg.models2d.base import (
    MODELS_2D,
    Batch2D,
    ClassSpec,
    Instances,
    Model2D,
    PanopticResult,
    Prediction2D,
    Segment,
    build_model_2d,
)

__all__ = [
    "MODELS_2D", "Batch2D", "ClassSpec", "Instances", "Model2D", "PanopticResult", "Prediction2D", "Segment",
    "build_model_2d",
]
