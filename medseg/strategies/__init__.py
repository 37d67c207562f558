"""Volume strategies behind one protocol, registered by name (``model.strategy``)."""

from __future__ import annotations

from medseg.config import Config
from medseg.registry import Registry
from medseg.strategies.base import Segmenter, VolumePrediction
from medseg.strategies.lowres import LowresSegmenter
from medseg.strategies.patch import PatchSegmenter
from medseg.strategies.slice2d import SliceSegmenter

STRATEGIES: Registry[type[Segmenter]] = Registry("strategy")
STRATEGIES.register("patch")(PatchSegmenter)
STRATEGIES.register("slice2d")(SliceSegmenter)
STRATEGIES.register("lowres")(LowresSegmenter)


def build_segmenter(config: Config) -> Segmenter:
    """The strategy named in ``model.strategy``, built from a planned config (class names known)."""
    return STRATEGIES.get(config.model.strategy)(config)


__all__ = ["STRATEGIES", "Segmenter", "VolumePrediction", "build_segmenter"]
