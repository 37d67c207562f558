"""Segmentation losses from MONAI, chosen by ``train.loss``. All take logits and integer label maps."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

from medseg.config import MARGINAL_LOSSES
from medseg.errors import MedsegError
from medseg.registry import Registry

LOSSES: Registry[Callable[[], nn.Module]] = Registry("loss")


class CrossEntropy(nn.Module):
    """Cross-entropy with the channel-first integer label maps the other losses take."""

    def __init__(self) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target[:, 0].long())


class MarginalLoss(nn.Module):
    """Dice and/or cross-entropy for partially labelled data: the marginal loss of Shi et al. (MedIA 2021).

    Where a sample's label map does not annotate class k (``annotated[b, k]`` False), its "background"
    voxels may be k, so the loss scores background against the probability of background *or* k: k's
    softmax mass joins background for that sample and k takes no part in its Dice. With every class
    annotated this is MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True)`` (or its Dice or
    CE half), which the tests check.
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in MARGINAL_LOSSES:
            raise MedsegError(f"config key 'train.loss': data.partial_classes needs one of "
                              f"{', '.join(MARGINAL_LOSSES)}, got '{name}'")
        self.use_dice, self.use_ce = name in ("dice_ce", "dice"), name in ("dice_ce", "ce")
        self.dice = DiceLoss(to_onehot_y=True, softmax=False, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
        """``logits`` [B, K, ...], ``target`` [B, 1, ...] integer labels, ``annotated`` [B, K] bool."""
        log_p = F.log_softmax(logits.float(), dim=1)
        shape = (*annotated.shape, *[1] * (logits.dim() - 2))
        unknown = ~annotated.bool().view(shape)
        joins_background = unknown.clone()
        joins_background[:, 0] = True
        log_background = torch.logsumexp(log_p.masked_fill(~joins_background, -torch.inf), dim=1, keepdim=True)
        log_merged = torch.cat([log_background, log_p[:, 1:].masked_fill(unknown[:, 1:], -torch.inf)], dim=1)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.use_dice:
            loss = loss + self.dice(log_merged.exp(), target)
        if self.use_ce:
            loss = loss + F.nll_loss(log_merged.clamp_min(-1e4), target[:, 0].long())
        return loss


# batch=True: Dice over the whole batch, so patches missing a class do not produce 0/0 terms.
LOSSES.register("dice_ce")(lambda: DiceCELoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("dice")(lambda: DiceLoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("dice_focal")(lambda: DiceFocalLoss(to_onehot_y=True, softmax=True, batch=True))
LOSSES.register("ce")(CrossEntropy)


def build_loss(name: str, partial_labels: bool = False) -> nn.Module:
    """The loss ``train.loss`` names; its marginal form when some cases leave classes unannotated."""
    loss = LOSSES.get(name, key="train.loss")()  # an unknown name fails here, listing the known ones
    return MarginalLoss(name) if partial_labels else loss
