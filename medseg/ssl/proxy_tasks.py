"""The inputs of the three proxy tasks: rotated views and volumes with cubes masked out.

Random draws come from a CPU ``generator`` (the global one by default) so that validation can use a
fixed one and score the same views every epoch.
"""

from __future__ import annotations

import torch

ROTATIONS = 4  # 0, 90, 180 and 270 degrees


def rotate(x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each volume of ``x`` [B, C, D, H, W] by a random multiple of 90 degrees in the axial plane
    (the first two spatial axes after RAS reorientation); returns the views and the class of each."""
    k = torch.randint(ROTATIONS, (x.shape[0],), generator=generator)
    views = torch.stack([torch.rot90(volume, int(turns), dims=(1, 2)) for volume, turns in zip(x, k)])
    return views, k.to(x.device)


def mask_cubes(
    x: torch.Tensor, fraction: float, block: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``fraction`` of the ``block``-sided cubes of each volume (at least one) by Gaussian noise
    with the volume's mean and standard deviation; returns the masked volumes and the boolean mask."""
    batch, _, *spatial = x.shape
    grid = [s // block for s in spatial]
    cells = grid[0] * grid[1] * grid[2]
    dropped = max(1, round(fraction * cells))
    order = torch.rand(batch, cells, generator=generator).argsort(dim=1)
    coarse = torch.zeros(batch, cells, dtype=torch.bool)
    coarse.scatter_(1, order[:, :dropped], True)
    coarse = coarse.view(batch, 1, *grid)
    mask = coarse.repeat_interleave(block, 2).repeat_interleave(block, 3).repeat_interleave(block, 4).to(x.device)
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    std = x.std(dim=(1, 2, 3, 4), keepdim=True)
    noise = torch.randn(x.shape, generator=generator).to(x.device) * std + mean
    return torch.where(mask, noise, x), mask
