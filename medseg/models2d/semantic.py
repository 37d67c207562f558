"""Per-pixel classifiers behind the 2D contract: ``fcn`` and ``unet2d``, the slice2d strategy's own 2D
networks (``medseg.networks``), trained with ``train.loss``."""

from __future__ import annotations

import torch
from torch import nn

from medseg.config import Config
from medseg.losses import build_loss
from medseg.models2d.base import Batch2D, ClassSpec, Prediction2D
from medseg.models2d.model import MODELS_2D, Model2D
from medseg.networks import NETWORKS_2D


class SemanticModel(Model2D):
    """A network mapping [B, 1, H, W] images to [B, K, H, W] logits; predicts softmax scores only."""

    needs_instances = False

    def __init__(self, network: nn.Module, classes: ClassSpec, config: Config, loss: nn.Module) -> None:
        super().__init__(classes, config)
        self.network = network
        self.loss = loss

    def losses(self, batch: Batch2D) -> dict[str, torch.Tensor]:
        return {"loss_semantic": self.loss(self.network(batch.images), batch.semantic[:, None])}

    def infer(self, images: torch.Tensor) -> list[Prediction2D]:
        return [Prediction2D(p) for p in torch.softmax(self.network(images), dim=1)]


def _semantic(network: str):
    def build(config: Config, classes: ClassSpec) -> SemanticModel:
        builder = NETWORKS_2D.get(network)
        net = builder(config.model, 1, classes.num_classes, config.compare.slice_size)
        loss = build_loss(config.train.loss, class_weights=config.train.class_weights, num_classes=classes.num_classes)
        return SemanticModel(net, classes, config, loss)

    return build


MODELS_2D.register("fcn")(_semantic("fcn"))
MODELS_2D.register("unet2d")(_semantic("unet2d"))
