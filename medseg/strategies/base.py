"""The Segmenter protocol every volume strategy implements, and what ``predict_volume`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import Transform
from torch import nn

from medseg.config import Config
from medseg.engine.pictures import overlay
from medseg.metrics import segmentation_metrics


@dataclass
class VolumePrediction:
    """A prediction on the preprocessed grid: ``labels`` [D, H, W] and, when kept, ``probabilities``
    [K, D, H, W] (softmax, sums to one over K). ``instances`` is for strategies that find objects."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None = None
    instances: Any | None = None


class Segmenter(nn.Module):
    """A strategy: how volumes are sampled for training and how a whole volume is predicted.

    The Trainer only calls ``training_step``, ``validation_step`` and the ``network`` attribute's
    parameters; inference only calls ``predict_volume``. Hyperparameters come from the config.
    """

    network: nn.Module
    ddp_find_unused_parameters = False  # True where a batch may not touch every parameter
    monitor, monitor_mode = "val_mean_dice", "max"  # the validation figure that picks best.pt

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.num_classes = len(config.data.class_names or [])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The pretrainable encoder's parameters (frozen or slowed by ``train.freeze_encoder_epochs`` and
        ``train.encoder_lr_scale``); none unless the network has one."""
        return []

    def grid_transforms(self, with_label: bool) -> list[Transform]:
        """Deterministic steps after the shared preprocessing that put a volume on the grid the network
        works on (none by default). Inference maps predictions back through the image's affine."""
        return []

    def train_sampling(self) -> list[Transform]:
        """Transforms after preprocessing that turn a cached volume into training samples."""
        raise NotImplementedError

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; must hold ``"loss"``."""
        raise NotImplementedError

    def predict_volume(self, image: torch.Tensor) -> VolumePrediction:
        """Segment one preprocessed image [C, D, H, W]."""
        raise NotImplementedError

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-class Dice of each whole validation volume (NaN where a class is absent from both), and
        the predicted ``labels`` (validation batches hold one volume, or volumes of one shape)."""
        dices, predictions = [], []
        for image, label in zip(batch["image"], batch["label"]):
            pred = self.predict_volume(image).labels.cpu()
            metrics = segmentation_metrics(pred, label[0].cpu(), self.num_classes, include_hd95=False)
            dices.append(torch.as_tensor(metrics["dice"], dtype=torch.float32))
            predictions.append(pred)
        return {"dice": torch.stack(dices), "labels": torch.stack(predictions)}

    def preview_images(self, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """RGB pictures [3, H, W] of the first validation case for TensorBoard: the middle axial slice
        with the ground truth | the prediction."""
        image, label, prediction = batch["image"][0, 0].cpu(), batch["label"][0, 0].cpu(), outputs["labels"][0].cpu()
        z = label.shape[-1] // 2
        pictures = [overlay(image[..., z], labels[..., z], self.num_classes) for labels in (label, prediction)]
        return {"val/overlay_truth_vs_prediction": torch.cat(pictures, dim=2)}
