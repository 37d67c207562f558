"""Segmentation losses from MONAI, chosen by ``train.loss``. All take logits and integer label maps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

from medseg.registry import Registry

LOSSES: Registry[Callable[[], nn.Module]] = Registry("loss")


class CrossEntropy(nn.Module):
    """Cross-entropy with the channel-first integer label maps the other losses take."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target[:, 0].long())


# batch=True: Dice over the whole batch, so patches missing a class do not produce 0/0 terms.
LOSSES.register("dice_ce")(lambda: DiceCELoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("dice")(lambda: DiceLoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("dice_focal")(lambda: DiceFocalLoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("ce")(CrossEntropy)


def build_loss(name: str) -> nn.Module:
    return LOSSES.get(name, key="train.loss")()
