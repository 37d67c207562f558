"""Pretraining as a task the Trainer drives like any strategy: sampling, a step, validation, pictures."""

from __future__ import annotations

import torch
from monai.transforms import CenterSpatialCropd, RandSpatialCropSamplesd, SpatialPadd, Transform

from medseg.config import Config
from medseg.data.transforms import augmentation
from medseg.engine.pictures import grey_row
from medseg.engine.task import Task
from medseg.ssl.losses import PretrainLoss
from medseg.ssl.network import SwinPretrainNetwork
from medseg.ssl.proxy_tasks import mask_cubes, rotate

VALIDATION_SEED = 0


class SwinPretrainer(Task):
    """Two views of each sub-volume, each rotated and masked at random; the network predicts the
    rotation, embeds the view (the two views of a sub-volume are the positive pair) and inpaints it."""

    monitor, monitor_mode = "val_loss", "min"

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.patch_size = list(config.pretrain.patch_size)
        self.network = SwinPretrainNetwork(config.model, config.pretrain, self.patch_size)
        self.loss = PretrainLoss(config.pretrain)

    def train_sampling(self) -> list[Transform]:
        data = self.config.data
        return [
            SpatialPadd("image", spatial_size=self.patch_size),
            RandSpatialCropSamplesd("image", roi_size=self.patch_size, num_samples=data.samples_per_volume,
                                    random_size=False),
            *augmentation(data.augment, keys=("image",)),
        ]

    def validation_sampling(self) -> list[Transform]:
        """One fixed sub-volume per validation image: the centre."""
        return [SpatialPadd("image", spatial_size=self.patch_size),
                CenterSpatialCropd("image", roi_size=self.patch_size)]

    def _views(self, image: torch.Tensor, generator: torch.Generator | None) -> tuple[dict, dict]:
        pretrain = self.config.pretrain
        views = []
        for _ in range(2):
            rotated, rotation = rotate(image, generator)
            masked, mask = mask_cubes(rotated, pretrain.mask_fraction, pretrain.mask_block, generator)
            views.append({"input": masked, "image": rotated, "mask": mask, "rotation": rotation})
        return views[0], views[1]

    def _losses(self, image: torch.Tensor, generator: torch.Generator | None = None) -> tuple[dict, dict, dict]:
        view1, view2 = self._views(image, generator)
        # One forward pass over both views: DDP allows one per backward, and it batches better.
        both = self.network(torch.cat([view1["input"], view2["input"]]))
        out1 = {key: value[: len(image)] for key, value in both.items()}
        out2 = {key: value[len(image):] for key, value in both.items()}
        return self.loss((out1, out2), (view1, view2)), view1, out1

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        return self._losses(batch["image"])[0]

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """The same views every epoch (a fixed generator), so validation losses are comparable."""
        losses = self._losses(batch["image"], torch.Generator().manual_seed(VALIDATION_SEED))[0]
        return {key: value.detach()[None] for key, value in losses.items()}

    def preview_images(self, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """The middle axial slice of the first validation view: original | masked input | inpainted."""
        _, view, output = self._losses(batch["image"][:1], torch.Generator().manual_seed(VALIDATION_SEED))
        z = view["image"].shape[-1] // 2
        slices = [view["image"][0, 0, ..., z], view["input"][0, 0, ..., z], output["reconstruction"][0, 0, ..., z]]
        return {"val/inpainting_original_masked_inpainted": grey_row([s.detach().float().cpu() for s in slices])}
