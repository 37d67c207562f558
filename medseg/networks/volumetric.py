"""3D networks from MONAI, built from ``ModelConfig``; each checks the patch sizes it can take."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from monai.networks.nets import UNETR, DynUNet, SwinUNETR, UNet
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from medseg.config import ModelConfig
from medseg.errors import MedsegError
from medseg.networks.vnet import PAPER_KERNEL, VNet
from medseg.registry import Registry

NETWORKS_3D: Registry[Callable[..., nn.Module]] = Registry("3D network")


def require_divisible(patch_size: Sequence[int], factor: int, network: str, key: str = "patch.patch_size") -> None:
    """Encoder-decoders need every side divisible by their total downsampling factor."""
    if any(s % factor for s in patch_size):
        raise MedsegError(
            f"config key '{key}': {list(patch_size)} does not suit network '{network}'; "
            f"every side must be divisible by {factor}"
        )


def axis_strides(model: ModelConfig, spatial_dims: int) -> list[list[int]]:
    """``model.strides`` with one value per axis for every level (a plain stride applies to all axes)."""
    return [[s] * spatial_dims if isinstance(s, int) else list(s) for s in model.strides]


def axis_kernels(model: ModelConfig, default: int) -> list[list[int]]:
    """``model.kernel_sizes`` with one size per axis for every level; ``default`` on every axis when unset."""
    return [[k] * 3 if isinstance(k, int) else list(k) for k in model.kernel_sizes or [default] * len(model.channels)]


def require_divisible_per_axis(patch_size: Sequence[int], strides: list[list[int]], network: str, key: str) -> None:
    """Every side divisible by the product of that axis's strides."""
    factors = [math.prod(level[a] for level in strides) for a in range(len(patch_size))]
    if any(s % f for s, f in zip(patch_size, factors)):
        raise MedsegError(f"config key '{key}': {list(patch_size)} does not suit network '{network}'; "
                          f"the sides must be divisible by {factors}")


def monai_unet(model: ModelConfig, spatial_dims: int, in_channels: int, out_channels: int,
               patch_size: Sequence[int], name: str, key: str = "patch.patch_size") -> nn.Module:
    """MONAI's (residual) UNet from the model section, for 2D and 3D alike; a level's stride may name
    each axis (``[2, 2, 1]``: no pooling across thick slices)."""
    strides = axis_strides(model, spatial_dims)
    if any(len(level) != spatial_dims for level in strides):
        raise MedsegError(f"config key 'model.strides': network '{name}' needs one stride or {spatial_dims} per "
                          f"level, got {model.strides}")
    require_divisible_per_axis(patch_size, strides, name, key)
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=model.channels,
        strides=[s[0] if len(set(s)) == 1 else tuple(s) for s in strides],  # type: ignore[misc]
        num_res_units=model.num_res_units,
        norm=model.norm,
        dropout=model.dropout,
    )


@NETWORKS_3D.register("unet")
def _unet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
          size_key: str = "patch.patch_size") -> nn.Module:
    return monai_unet(model, 3, in_channels, out_channels, patch_size, "unet", key=size_key)


@NETWORKS_3D.register("dynunet")
def _dynunet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
             size_key: str = "patch.patch_size") -> nn.Module:
    """MONAI's DynUNet (the nnU-Net architecture) with a stride and a kernel size per axis and level, as
    planning gives them for anisotropic spacings."""
    strides = axis_strides(model, 3)
    require_divisible_per_axis(patch_size, strides, "dynunet", size_key)
    kernels = axis_kernels(model, 3)
    if model.deep_supervision and len(strides) < 2:
        raise MedsegError("config key 'model.deep_supervision': needs at least two poolings (model.strides), "
                          f"got {len(strides)}")
    return DynUNet(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=kernels,
        strides=[[1, 1, 1], *strides],
        upsample_kernel_size=strides,
        filters=model.channels,
        norm_name=model.norm,
        dropout=model.dropout or None,
        res_block=model.num_res_units > 0,
        deep_supervision=model.deep_supervision,
        deep_supr_num=deep_supervision_heads(len(strides)),
    )


def deep_supervision_heads(poolings: int) -> int:
    """Lower-resolution outputs scored besides the full-resolution one: every decoder stage's but the
    coarsest, as nnU-Net v2 weighs it out (at least one; MONAI's DynUNet takes fewer than ``poolings``)."""
    return max(1, poolings - 2)


@NETWORKS_3D.register("vnet")
def _vnet(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
          size_key: str = "patch.patch_size") -> nn.Module:
    """V-Net (Milletari et al. 2016) with ``model.channels`` per level, ``model.strides`` between levels
    and ``model.kernel_sizes`` (default 5, the paper's): the default model section is the paper's network."""
    strides = axis_strides(model, 3)
    require_divisible_per_axis(patch_size, strides, "vnet", size_key)
    return VNet(in_channels, out_channels, model.channels, axis_kernels(model, PAPER_KERNEL), strides,
                norm=model.norm, dropout=model.dropout)


# (feature_size, hidden_size, mlp_dim, num_heads); "base" is the UNETR paper's configuration.
UNETR_SIZES = {"tiny": (8, 192, 768, 3), "small": (16, 384, 1536, 6), "base": (16, 768, 3072, 12)}
# Swin UNETR feature sizes; 48 is the paper's.
SWIN_SIZES = {"tiny": 12, "small": 24, "base": 48}


def _preset(model: ModelConfig, sizes: dict, network: str):
    if model.size not in sizes:
        raise MedsegError(f"config key 'model.size': '{model.size}' is not a {network} size; valid: {', '.join(sizes)}")
    return sizes[model.size]


class UNETRWithEncoder(UNETR):
    """MONAI's UNETR with its ViT exposed as ``encoder`` (the name medseg freezes and scales); the
    parameter names stay MONAI's (``vit.*``)."""

    @property
    def encoder(self) -> nn.Module:
        return self.vit


class SwinUNETRWithEncoder(SwinUNETR):
    """MONAI's Swin UNETR with its Swin transformer exposed as ``encoder``; the parameter names stay
    MONAI's (``swinViT.*``), which pretrained weights are saved under."""

    @property
    def encoder(self) -> SwinTransformer:
        return self.swinViT


@NETWORKS_3D.register("unetr")
def _unetr(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
           size_key: str = "patch.patch_size") -> nn.Module:
    """UNETR (Hatamizadeh et al. 2022): a ViT over 16^3 tokens, so sides divisible by 16."""
    require_divisible(patch_size, 16, "unetr", key=size_key)
    feature, hidden, mlp, heads = _preset(model, UNETR_SIZES, "unetr")
    network = UNETRWithEncoder(in_channels=in_channels, out_channels=out_channels, img_size=tuple(patch_size),
                               feature_size=feature, hidden_size=hidden, mlp_dim=mlp, num_heads=heads,
                               norm_name=model.norm, dropout_rate=model.dropout)
    # MONAI builds a cross-attention norm in every block even without cross-attention; frozen, it is not
    # tracked by optimisers or DDP as a parameter that never receives a gradient.
    for name, parameter in network.named_parameters():
        if "norm_cross_attn" in name:
            parameter.requires_grad_(False)
    return network


MAX_SWIN_WINDOW = 7  # MONAI's default and the released pretrained weights' window


def tiling_window(patch_size: Sequence[int]) -> int:
    """The largest attention window up to 7 that divides every side of Swin UNETR's first-stage token grid
    (half the patch). That stage holds most of the attention; a window that does not tile it is padded,
    and MONAI's 7 pads a 64^3 patch's 32^3 tokens to 35^3 and the second stage's 16^3 to 21^3. On a CPU a
    training step of the tiny Swin UNETR at 64^3 took 1.6 s with a window of 4 against 3.9 s with 7."""
    tokens = [side // 2 for side in patch_size]
    return next((w for w in range(MAX_SWIN_WINDOW, 1, -1) if all(t % w == 0 for t in tokens)), MAX_SWIN_WINDOW)


@NETWORKS_3D.register("swin_unetr")
def _swin_unetr(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
                size_key: str = "patch.patch_size") -> nn.Module:
    """Swin UNETR (Tang et al. 2022): five stride-2 stages, so sides divisible by 32; ``model.window_size``,
    when unset, is the window that tiles the patch's tokens (``tiling_window``)."""
    require_divisible(patch_size, 32, "swin_unetr", key=size_key)
    window = model.window_size or tiling_window(patch_size)
    return SwinUNETRWithEncoder(in_channels=in_channels, out_channels=out_channels, window_size=window,
                                feature_size=_preset(model, SWIN_SIZES, "swin_unetr"), norm_name=model.norm,
                                drop_rate=model.dropout, use_checkpoint=model.gradient_checkpointing,
                                use_v2=model.use_v2)


def build_network_3d(model: ModelConfig, in_channels: int, out_channels: int, patch_size: Sequence[int],
                     size_key: str = "patch.patch_size") -> nn.Module:
    """``size_key`` names the config key of ``patch_size`` in errors about sizes the network cannot take."""
    builder = NETWORKS_3D.get(model.network, key="model.network")
    if model.deep_supervision and model.network != "dynunet":
        raise MedsegError(f"config key 'model.deep_supervision': only dynunet has deep supervision heads, "
                          f"not '{model.network}'")
    return builder(model, in_channels, out_channels, patch_size, size_key=size_key)
