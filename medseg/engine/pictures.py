"""Pictures for TensorBoard, drawn with torch alone."""

from __future__ import annotations

import torch


def overlay(image: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 0.45) -> torch.Tensor:
    """A [3, H, W] RGB picture of a grey image slice with coloured labels, for TensorBoard.
    (MONAI's ``blend_images`` does this too but needs matplotlib, which medseg does not depend on.)"""
    grey = image.float()
    grey = (grey - grey.min()) / (grey.max() - grey.min() + 1e-8)
    rgb = grey.expand(3, *grey.shape).clone()
    palette = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0.4, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0.5, 0], [0.6, 0.3, 1]]
    )
    for k in range(1, num_classes):
        mask = labels == k
        colour = palette[(k - 1) % len(palette)][:, None]
        rgb[:, mask] = (1 - alpha) * rgb[:, mask] + alpha * colour
    return rgb


def grey_row(slices: list[torch.Tensor]) -> torch.Tensor:
    """Grey slices side by side as one [3, H, N*W] picture, all scaled by the first one's range so
    that intensities compare (e.g. original | masked | reconstructed)."""
    lo, hi = slices[0].min(), slices[0].max()
    row = torch.cat([((s - lo) / (hi - lo + 1e-8)).clamp(0, 1) for s in slices], dim=1)
    return row.expand(3, *row.shape).clone()
