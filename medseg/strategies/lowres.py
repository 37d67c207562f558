"""The ``lowres`` strategy: the whole volume resized to a fixed grid and segmented at once.

After Milletari et al., "V-Net" (3DV 2016), which used 128x128x64: whole-volume context at a low cost,
paid for with resolution. The resize is an ordinary preprocessing step that updates the image's
affine, so ``medseg infer`` resamples the class probabilities (not the labels) back to each scan's own
grid, slab by slab, as for every strategy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from monai.transforms import Resized, Transform

from medseg.config import Config
from medseg.data.transforms import augmentation
from medseg.networks import build_network_3d
from medseg.resample import softmax_
from medseg.strategies.base import Cascade, Segmenter, VolumePrediction


class LowresSegmenter(Segmenter):
    """V-Net (or a 3D U-Net by name) on volumes resized to ``lowres.grid_size``."""

    inference_keys = ("lowres.refine",)

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.grid_size = list(config.lowres.grid_size)
        self.network = build_network_3d(config.model, 1, self.num_classes, self.grid_size, size_key="lowres.grid_size")

    def network_input_size(self) -> list[int]:
        return self.grid_size

    def grid_transforms(self, with_label: bool) -> list[Transform]:
        keys = ("image", "label") if with_label else ("image",)
        # Labels by nearest neighbour for training; images by trilinear interpolation.
        return [Resized(keys, spatial_size=self.grid_size, mode=("trilinear", "nearest")[: len(keys)])]

    def train_sampling(self) -> list[Transform]:
        return augmentation(self.config.data.augment, ("image", "label"))

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"loss": self.segmentation_loss(self.network(batch["image"]), batch)}

    @torch.inference_mode()
    def segment(self, image: torch.Tensor) -> VolumePrediction:
        """The whole grid at once, mirrored as ``infer.mirror_axes`` says."""
        return VolumePrediction(softmax_(self.network_logits(image[None].to(self.device))[0]))

    def cascade(self) -> Cascade | None:
        """``lowres.refine_run``: a patch model that predicts again at full resolution in the found region."""
        lowres = self.config.lowres
        if not lowres.refine_run:
            return None
        return Cascade(Path(lowres.refine_run), lowres.refine_margin_mm, "lowres.refine_run")
