"""V-Net (Milletari et al., 3DV 2016) from MONAI blocks, with the widths, kernels and strides a budget needs.

The paper's network has fixed widths (16 to 256 channels) and 5x5x5 kernels, which is what MONAI's
``VNet`` builds; on a CPU one step of it on the paper's 128x128x64 grid takes seconds. This one keeps the
paper's structure (residual stages of 1, 2, 3, 3, 3 convolutions; strided 2x2x2 convolutions down and
transposed ones up; skip connections concatenated; PReLU) and takes its width from ``model.channels``,
its kernels from ``model.kernel_sizes`` (default 5, the paper's) and its per-axis strides from
``model.strides``, so a planner can make it as light as a workstation allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from torch import nn

PAPER_KERNEL = 5
PAPER_CONVOLUTIONS = (1, 2, 3, 3, 3)  # per level, encoder and decoder alike
ACTIVATION = ("prelu", {"init": 0.25})


def _conv(in_channels: int, out_channels: int, kernel: Sequence[int] | int, norm: str,
          stride: Sequence[int] | int = 1, transposed: bool = False, dropout: float = 0.0) -> Convolution:
    resampling = stride != 1  # kernel = stride: non-overlapping windows, no padding
    return Convolution(3, in_channels, out_channels, strides=stride, kernel_size=kernel, act=ACTIVATION,
                       norm=norm, dropout=dropout or None, is_transposed=transposed,
                       padding=0 if resampling else None, output_padding=0 if transposed else None)


class ResidualStage(nn.Module):
    """``count`` convolutions (norm, PReLU) whose output is added to the stage's input and activated."""

    def __init__(self, channels: int, count: int, kernel: Sequence[int] | int, norm: str, dropout: float) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[_conv(channels, channels, kernel, norm, dropout=dropout) for _ in range(count)])
        self.act = get_act_layer(ACTIVATION)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convs(x) + x)


class VNet(nn.Module):
    """The V-Net with ``channels[i]`` features at level i (the decoder has twice as many after each
    concatenation), ``kernels[i]`` per axis and ``strides[i]`` per axis between levels i and i+1."""

    def __init__(self, in_channels: int, out_channels: int, channels: Sequence[int],
                 kernels: Sequence[Sequence[int]], strides: Sequence[Sequence[int]], norm: str = "batch",
                 dropout: float = 0.0) -> None:
        super().__init__()
        levels = len(channels)
        if len(kernels) != levels or len(strides) != levels - 1:
            raise ValueError(f"VNet: {levels} levels need {levels} kernels and {levels - 1} strides")
        counts = [PAPER_CONVOLUTIONS[min(i, len(PAPER_CONVOLUTIONS) - 1)] for i in range(levels)]
        self.stem = _conv(in_channels, channels[0], kernels[0], norm)
        self.stem_skip = nn.Conv3d(in_channels, channels[0], kernel_size=1)  # the paper repeats the input
        self.stem_act = get_act_layer(ACTIVATION)
        self.down = nn.ModuleList()
        self.encoder = nn.ModuleList()
        for i in range(1, levels):
            self.down.append(_conv(channels[i - 1], channels[i], strides[i - 1], norm, stride=strides[i - 1]))
            self.encoder.append(ResidualStage(channels[i], counts[i], kernels[i], norm, dropout))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        below = channels[-1]
        for i in reversed(range(levels - 1)):
            self.up.append(_conv(below, channels[i], strides[i], norm, stride=strides[i], transposed=True))
            self.decoder.append(ResidualStage(2 * channels[i], counts[i], kernels[i], norm, dropout))
            below = 2 * channels[i]
        self.head = nn.Conv3d(below, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x) + self.stem_skip(x))
        skips = [x]
        for down, stage in zip(self.down, self.encoder):
            x = stage(down(x))
            skips.append(x)
        skips.pop()  # the bottom level has no skip of its own
        for up, stage in zip(self.up, self.decoder):
            x = stage(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)

