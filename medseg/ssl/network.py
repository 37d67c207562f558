"""The Swin UNETR encoder with the three pretraining heads (Tang et al. 2022, Fig. 2).

The encoder is taken from a Swin UNETR built by the same builder as fine-tuning uses, so its
parameter names (``swinViT.*``) are exactly those that fine-tuning loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.config import ModelConfig, PretrainConfig
from medseg.errors import MedsegError
from medseg.networks import build_network_3d
from medseg.networks.volumetric import SwinUNETRWithEncoder
from medseg.ssl.proxy_tasks import ROTATIONS

UPSAMPLINGS = 5  # the encoder's bottleneck is 1/32 of the input
NORM_GROUPS = 4


def _inpainting_decoder(dim: int, out_channels: int) -> nn.Sequential:
    """Five (conv, norm, activation, x2 upsampling) stages back to the input size, then a 1x1 conv.
    Group norm, unlike instance norm, also trains on a one-voxel bottleneck (32^3 inputs)."""
    layers: list[nn.Module] = []
    channels = dim
    for stage in range(UPSAMPLINGS):
        nxt = max(dim // 2 ** (stage + 1), 8)
        layers += [nn.Conv3d(channels, nxt, 3, padding=1), nn.GroupNorm(NORM_GROUPS, nxt), nn.LeakyReLU(inplace=True),
                   nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)]
        channels = nxt
    layers.append(nn.Conv3d(channels, out_channels, 1))
    return nn.Sequential(*layers)


class SwinPretrainNetwork(nn.Module):
    """``forward`` returns rotation logits [B, 4], contrastive embeddings [B, E] and the inpainted
    volume [B, C, D, H, W] (one dict; the same keys always)."""

    def __init__(
        self, model: ModelConfig, pretrain: PretrainConfig, patch_size: Sequence[int], in_channels: int = 1
    ) -> None:
        super().__init__()
        if model.network != "swin_unetr":
            raise MedsegError("config key 'model.network': pretraining trains a Swin UNETR encoder; "
                              f"set it to swin_unetr, not '{model.network}'")
        network = build_network_3d(model, in_channels, 2, patch_size, size_key="pretrain.patch_size")
        assert isinstance(network, SwinUNETRWithEncoder)  # the builder of model.network=swin_unetr makes one
        self.swinViT = network.encoder
        dim = 2 * self.swinViT.num_features  # the last stage's patch merging doubles the channels
        self.rotation_head = nn.Linear(dim, ROTATIONS)
        self.contrastive_head = nn.Linear(dim, pretrain.embedding_dim)
        self.inpainting_head = _inpainting_decoder(dim, in_channels)

    @property
    def encoder(self) -> nn.Module:
        return self.swinViT

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.swinViT(x, normalize=True)[-1]
        pooled = features.mean(dim=(2, 3, 4))
        return {"rotation": self.rotation_head(pooled), "embedding": self.contrastive_head(pooled),
                "reconstruction": self.inpainting_head(features)}
