"""The pretraining loss: rotation cross-entropy, NT-Xent between two views, L1 on the masked voxels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from torch import nn

from medseg.config import PretrainConfig


def masked_l1(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the dropped voxels only: the network is scored on what it had to infer."""
    return (reconstruction - target).abs().masked_select(mask).mean()


class PretrainLoss(nn.Module):
    """Weighted sum of the three proxy losses; returns every term so each can be logged."""

    def __init__(self, config: PretrainConfig) -> None:
        super().__init__()
        self.config = config
        self.contrastive = ContrastiveLoss(temperature=config.temperature)  # NT-Xent (SimCLR)

    def forward(self, outputs: tuple[dict, dict], targets: tuple[dict, dict]) -> dict[str, torch.Tensor]:
        (out1, out2), (t1, t2) = outputs, targets
        rotation = F.cross_entropy(torch.cat([out1["rotation"], out2["rotation"]]),
                                   torch.cat([t1["rotation"], t2["rotation"]]))
        contrastive = self.contrastive(out1["embedding"].float(), out2["embedding"].float())
        inpainting = 0.5 * (masked_l1(out1["reconstruction"], t1["image"], t1["mask"])
                            + masked_l1(out2["reconstruction"], t2["image"], t2["mask"]))
        c = self.config
        total = c.rotation_weight * rotation + c.contrastive_weight * contrastive + c.inpainting_weight * inpainting
        return {"loss": total, "loss_rotation": rotation, "loss_contrastive": contrastive,
                "loss_inpainting": inpainting}
