"""2D networks, registered by name: used by the slice2d strategy and the 2D model comparison."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.models.segmentation import fcn_resnet50

from medseg.config import ModelConfig
from medseg.networks.volumetric import monai_unet
from medseg.registry import Registry

NETWORKS_2D: Registry[Callable[..., nn.Module]] = Registry("2D network")


class FCN(nn.Module):
    """torchvision's FCN-ResNet50 (no pretrained weights), with its first convolution taking any
    number of input channels and ``forward`` returning the logits tensor rather than a dict."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=out_channels, aux_loss=False)
        if in_channels != 3:
            self.model.backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


@NETWORKS_2D.register("unet2d")
def _unet2d(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int]) -> nn.Module:
    return monai_unet(model, 2, in_channels, out_channels, patch_size, "unet2d", key="slice2d.patch_size")


@NETWORKS_2D.register("fcn")
def _fcn(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int]) -> nn.Module:
    return FCN(in_channels, out_channels)


def build_network_2d(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int]) -> nn.Module:
    return NETWORKS_2D.get(model.network, key="model.network")(model, in_channels, out_channels, patch_size)
