"""3D networks from MONAI, built from ``ModelConfig``; each checks the patch sizes it can take."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from monai.networks.nets import DynUNet, UNet, VNet
from torch import nn

from medseg.config import ModelConfig
from medseg.errors import MedsegError
from medseg.registry import Registry

NETWORKS_3D: Registry[Callable[..., nn.Module]] = Registry("3D network")


def require_divisible(patch_size: Sequence[int], factor: int, network: str, key: str = "data.patch_size") -> None:
    """Encoder-decoders need every side divisible by their total downsampling factor."""
    if any(s % factor for s in patch_size):
        raise MedsegError(
            f"config key '{key}': {list(patch_size)} does not suit network '{network}'; "
            f"every side must be divisible by {factor}"
        )


def check_levels(model: ModelConfig) -> None:
    if len(model.channels) != len(model.strides) + 1:
        raise MedsegError(
            f"config keys 'model.channels'/'model.strides': need one more channel entry than strides, "
            f"got {len(model.channels)} and {len(model.strides)}"
        )


def monai_unet(model: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int,
               patch_size: Sequence[int], name: str, key: str = "data.patch_size") -> nn.Module:
    """MONAI's UNet from the model section, for 2D and 3D alike."""
    check_levels(model)
    require_divisible(patch_size, math.prod(model.strides), name, key=key)
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=model.channels,
        strides=model.strides,
        num_res_units=model.num_res_units,
        norm=model.norm,
        dropout=model.dropout,
    )


@NETWORKS_3D.register("unet")
def _unet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
          size_key: str = "data.patch_size") -> nn.Module:
    return monai_unet(model, 3, in_channels, out_channels, patch_size, "unet", key=size_key)


@NETWORKS_3D.register("dynunet")
def _dynunet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
             size_key: str = "data.patch_size") -> nn.Module:
    check_levels(model)
    require_divisible(patch_size, math.prod(model.strides), "dynunet", key=size_key)
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=[3] * len(model.channels),
        strides=[1, *model.strides],
        upsample_kernel_size=model.strides,
        filters=model.channels,
        norm_name=model.norm,
        dropout=model.dropout or None,
        res_block=model.num_res_units > 0,
    )


@NETWORKS_3D.register("vnet")
def _vnet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
          size_key: str = "data.patch_size") -> nn.Module:
    """MONAI's V-Net (Milletari et al. 2016); four stride-2 stages, so sides divisible by 16."""
    require_divisible(patch_size, 16, "vnet", key=size_key)
    p = model.dropout
    return VNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, dropout_prob_down=p,
                dropout_prob_up=(p, p))


def build_network_3d(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
                     size_key: str = "data.patch_size") -> nn.Module:
    """``size_key`` names the config key of ``patch_size`` in errors about sizes the network cannot take."""
    return NETWORKS_3D.get(model.network)(model, in_channels, out_channels, patch_size, size_key=size_key)
