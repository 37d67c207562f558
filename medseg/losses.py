"""Segmentation losses from MONAI, chosen by ``train.loss``. All take logits and integer label maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss
from torch import nn

from medseg.config import MARGINAL_LOSSES
from medseg.errors import MedsegError
from medseg.registry import Registry

LOSSES: Registry[Callable[[Sequence[float] | None], nn.Module]] = Registry("loss")


class SoftmaxDiceCE(nn.Module):
    """Soft Dice and/or cross-entropy of softmax outputs against integer labels, with no one-hot tensor,
    and their marginal form for partially labelled cases (Shi et al., MedIA 2021).

    Equal to MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, batch=True)`` (or its Dice or CE half),
    which the tests check, but faster: one log-softmax, per-class sums, and the probability at each
    voxel's own class gathered instead of multiplied with a one-hot copy of the labels. MONAI's took a
    third of a CPU training step on OpenKBP patches.

    ``ce_top_fraction`` below 1 averages the cross-entropy over only that fraction of the batch's voxels,
    the ones with the highest loss (nnU-Net's TopK loss). With a whole CT volume the organs are a few
    thousandths of its voxels: once background is easy, plain CE weighs a small organ by its voxel share
    and the soft Dice's gradient fades as its probability nears 0, so the organ is learned late; the top
    fraction keeps every voxel still misclassified in the average at a tenfold weight. On OpenKBP's V-Net
    it made the large organs appear earlier per step but left the oesophagus and larynx at 0 after 30
    CPU-minutes, as Dice+CE does (the results page), so it is an option, not the default.

    ``class_weights`` [K] weigh each voxel's cross-entropy by its label's weight, averaged as
    ``torch.nn.functional.cross_entropy(weight=...)`` averages (over the weights, so the loss keeps its
    scale).

    ``annotated`` [B, K] (bool) says which classes each sample's case annotates. Where class k is not
    annotated, that case's "background" voxels may be k, so background is scored against the probability
    of background *or* k: k's softmax mass joins background for that sample, and k takes no part in
    its Dice.
    """

    SMOOTH = 1e-5  # MONAI's smooth_nr and smooth_dr

    def __init__(self, dice: bool = True, ce: bool = True, ce_top_fraction: float = 1.0,
                 class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not 0.0 < ce_top_fraction <= 1.0:
            raise ValueError(f"ce_top_fraction must be in (0, 1], got {ce_top_fraction}")
        self.use_dice, self.use_ce, self.ce_top_fraction = dice, ce, ce_top_fraction
        self.class_weights: torch.Tensor | None
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.tensor(list(class_weights), dtype=torch.float32), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                annotated: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` [B, K, ...], ``target`` [B, 1, ...] integer labels, ``annotated`` [B, K] bool or None."""
        batch, classes = logits.shape[:2]
        log_p = F.log_softmax(logits.float(), dim=1).reshape(batch, classes, -1)
        labels = target.reshape(batch, -1).long()
        log_at_label = log_p.gather(1, labels[:, None])[:, 0]  # [B, N]
        p = log_p.exp()
        unknown = None if annotated is None or bool(annotated.all()) else ~annotated.bool()
        if unknown is not None:
            joins_background = unknown.clone()
            joins_background[:, 0] = True
            background = torch.einsum("bkn,bk->bn", p, joins_background.to(p.dtype))
            # log(p_0 + the unannotated p_k); where that sum underflows, log p_0 (a tight lower bound).
            tiny = torch.finfo(background.dtype).tiny
            log_background = torch.maximum(torch.log(background.clamp_min(tiny)), log_p[:, 0])
            log_at_label = torch.where(labels == 0, log_background, log_at_label)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.use_ce:
            voxel_ce = -log_at_label.reshape(-1)
            weights = None if self.class_weights is None else self.class_weights[labels.reshape(-1)]
            if weights is not None:
                voxel_ce = voxel_ce * weights
            if self.ce_top_fraction < 1.0:
                hardest = max(1, int(voxel_ce.numel() * self.ce_top_fraction))
                voxel_ce, chosen = voxel_ce.topk(hardest, sorted=False)
                weights = None if weights is None else weights[chosen]
            loss = loss + (voxel_ce.mean() if weights is None else voxel_ce.sum() / weights.sum())
        if self.use_dice:
            predicted = p.sum(2)  # [B, K]
            if unknown is not None:
                moved = (predicted * unknown).sum(1)
                predicted = predicted.masked_fill(unknown, 0.0)
                predicted = torch.cat([predicted[:, :1] + moved[:, None], predicted[:, 1:]], dim=1)
            overlap = log_p.new_zeros(batch, classes).scatter_add_(1, labels, log_at_label.exp())
            counts = log_p.new_zeros(batch, classes).scatter_add_(1, labels, torch.ones_like(log_at_label))
            overlap, predicted, counts = overlap.sum(0), predicted.sum(0), counts.sum(0)  # batch Dice
            dice = (2 * overlap + self.SMOOTH) / (predicted + counts + self.SMOOTH)
            loss = loss + (1 - dice).mean()
        return loss


# Dice over the whole batch (MONAI's batch=True), so patches missing a class do not produce 0/0 terms.
# Each takes ``train.class_weights`` (None: every class weighs 1), applied to its cross-entropy term (the
# Dice term already weighs every class alike); dice_focal passes them to MONAI, which weighs both terms.
LOSSES.register("dice_ce")(lambda w: SoftmaxDiceCE(dice=True, ce=True, class_weights=w))
LOSSES.register("dice_topk10")(lambda w: SoftmaxDiceCE(dice=True, ce=True, ce_top_fraction=0.1, class_weights=w))
LOSSES.register("dice")(lambda w: SoftmaxDiceCE(dice=True, ce=False))
LOSSES.register("dice_focal")(lambda w: DiceFocalLoss(to_onehot_y=True, softmax=True, batch=True,
                                                      weight=None if w is None else list(w)))
LOSSES.register("ce")(lambda w: SoftmaxDiceCE(dice=False, ce=True, class_weights=w))


def build_loss(name: str, partial_labels: bool = False, class_weights: Sequence[float] | None = None,
               num_classes: int | None = None) -> nn.Module:
    """The loss ``train.loss`` names, with ``class_weights`` (one per class of ``num_classes``, background
    first); with partially labelled cases it must have a marginal form."""
    factory = LOSSES.get(name, key="train.loss")  # an unknown name fails here, listing the known ones
    if partial_labels and name not in MARGINAL_LOSSES:
        raise MedsegError(f"config key 'train.loss': data.partial_classes needs one of "
                          f"{', '.join(MARGINAL_LOSSES)}, got '{name}'")
    if class_weights is not None and num_classes is not None and len(class_weights) != num_classes:
        raise MedsegError(f"config key 'train.class_weights': expected {num_classes} weights, one per class "
                          f"(background first), got {len(class_weights)}")
    return factory(class_weights)
