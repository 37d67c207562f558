"""Pictures for TensorBoard and reports: label maps drawn over grey slices with torchvision."""

from __future__ import annotations

import torch
from torchvision.utils import draw_segmentation_masks

COLOURS = ["red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "purple", "pink", "brown"]


def class_colour(k: int) -> str:
    """The colour of foreground class ``k`` (1, 2, ...) in every picture medseg draws."""
    return COLOURS[(k - 1) % len(COLOURS)]


def grey_uint8(image: torch.Tensor) -> torch.Tensor:
    """A 2D slice scaled to its own range as uint8 grey levels."""
    grey = image.float()
    return ((grey - grey.min()) / (grey.max() - grey.min()).clamp(min=1e-8) * 255).to(torch.uint8)


def overlay_uint8(
    image: torch.Tensor, labels: torch.Tensor | None, num_classes: int, alpha: float = 0.45
) -> torch.Tensor:
    """uint8 RGB [3, H, W]: a grey 2D slice with each foreground class of ``labels`` in its colour."""
    rgb = grey_uint8(image).expand(3, *image.shape).contiguous()
    if labels is None or num_classes < 2:
        return rgb
    masks = torch.stack([labels == k for k in range(1, num_classes)])
    return draw_segmentation_masks(rgb, masks, alpha=alpha, colors=[class_colour(k) for k in range(1, num_classes)])


def overlay(image: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 0.45) -> torch.Tensor:
    """The same as a float picture in [0, 1], the form TensorBoard's ``add_image`` takes."""
    return overlay_uint8(image, labels, num_classes, alpha).float() / 255.0


def grey_row(slices: list[torch.Tensor]) -> torch.Tensor:
    """Grey slices side by side as one [3, H, N*W] picture, all scaled by the first one's range so
    that intensities compare (e.g. original | masked | reconstructed)."""
    lo, hi = slices[0].min(), slices[0].max()
    row = torch.cat([((s - lo) / (hi - lo + 1e-8)).clamp(0, 1) for s in slices], dim=1)
    return row.expand(3, *row.shape).clone()
