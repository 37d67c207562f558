"""The 2D model task: every 2D model trains, validates and predicts through it, so semantic, instance and
panoptic models run on the same Trainer and are scored by the same code."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import numpy as np
import torch

from medseg.config import Config
from medseg.engine.pictures import overlay
from medseg.engine.task import Task
from medseg.metrics import segmentation_metrics
from medseg.models2d.base import Batch2D, ClassSpec, Prediction2D
from medseg.models2d.targets import make_batch, semantic_target
from medseg.registry import Registry


class Model2D(Task):
    """A 2D model behind the common contract, trained by the Trainer like every task.

    Training batches hold axial slices (``image`` [B, 1, H, W], ``label`` [B, 1, H, W] dataset label
    values); validation batches hold whole volumes (``image``/``label`` [1, 1, H, W, Z]) of which
    ``compare.val_slices_per_case`` evenly spaced slices are scored. Subclasses implement ``losses`` and
    ``infer``; ``predict`` sets eval mode itself, so callers cannot mix up train and eval behaviour
    (batch norm, Mask R-CNN's two forward paths)."""

    needs_instances = True  # per-pixel models set False: their batches skip the connected components

    def __init__(self, classes: ClassSpec, config: Config) -> None:
        super().__init__()
        self.classes = classes
        self.settings = config.compare
        self.predict_batch = config.train.batch_size

    @property
    def score_names(self) -> list[str]:
        return list(self.classes.names[1:])

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Named loss terms of a batch of slices and their sum, ``loss``."""
        labels = batch["label"][:, 0]
        terms = self.losses(make_batch(batch["image"], labels, self.classes, with_instances=self.needs_instances))
        return {"loss": torch.stack(list(terms.values())).sum(), **terms}

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> list[Prediction2D]:
        """One ``Prediction2D`` per image of ``images`` [B, 1, H, W], in eval mode without gradients."""
        self.eval()
        return self.infer(images)

    def predict_slices(self, image: torch.Tensor, indices: list[int]) -> list[Prediction2D]:
        """Predictions of the axial slices ``indices`` of one volume [H, W, Z], in batches."""
        predictions: list[Prediction2D] = []
        for first in range(0, len(indices), self.predict_batch):
            chunk = indices[first : first + self.predict_batch]
            predictions += self.predict(image[..., chunk].permute(2, 0, 1)[:, None].to(self.device))
        return predictions

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-class Dice over the scored slices of each validation volume (the Trainer's best.pt figure)."""
        dices, shown = [], []
        for image, label in zip(batch["image"], batch["label"]):
            indices = evenly_spaced(image.shape[-1], self.settings.val_slices_per_case)
            predicted = torch.stack([p.labels.cpu() for p in self.predict_slices(image[0], indices)], dim=-1)
            truth = semantic_target(label[0][..., indices].cpu(), self.classes)
            dice = segmentation_metrics(predicted, truth, self.classes.num_classes, include_hd95=False)["dice"]
            dices.append(torch.as_tensor(dice, dtype=torch.float32))
            shown.append(predicted[..., len(indices) // 2])
        return {"dice": torch.stack(dices), "labels": torch.stack(shown)}

    def preview_images(self, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """The middle scored slice of the first validation volume: ground truth | prediction."""
        image, label = batch["image"][0, 0].cpu(), batch["label"][0, 0].cpu()
        indices = evenly_spaced(image.shape[-1], self.settings.val_slices_per_case)
        z = indices[len(indices) // 2]
        truth = semantic_target(label[..., z], self.classes)
        num_classes = self.classes.num_classes
        pictures = [overlay(image[..., z], labels, num_classes) for labels in (truth, outputs["labels"][0])]
        return {"val/overlay_truth_vs_prediction": torch.cat(pictures, dim=2)}

    @abstractmethod
    def losses(self, batch: Batch2D) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def infer(self, images: torch.Tensor) -> list[Prediction2D]: ...


def evenly_spaced(depth: int, count: int) -> list[int]:
    """``count`` evenly spaced slice indices of ``depth`` slices, empty ones included: the mix a model
    meets when it segments whole scans."""
    return [int(z) for z in np.unique(np.linspace(0, depth - 1, min(count, depth)).round())]


MODELS_2D: Registry[Callable[[Config, ClassSpec], Model2D]] = Registry("2D model")


def build_model_2d(name: str, config: Config, classes: ClassSpec) -> Model2D:
    """The adapter registered as ``name``, built from the config's ``compare`` and ``model`` sections."""
    return MODELS_2D.get(name, key="compare.models")(config, classes)
