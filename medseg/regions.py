"""Bounding boxes of label regions: the one helper behind coarse-to-fine refinement, the lowres cascade
and the cropping that keeps metrics cheap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def bounding_box(mask: np.ndarray | torch.Tensor, margin: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """The box around the non-zero voxels of ``mask``, grown by ``margin`` voxels (one value, or one per
    axis) and clipped to the array; None when the mask is empty."""
    others = [tuple(a for a in range(mask.ndim) if a != axis) for axis in range(mask.ndim)]
    if isinstance(mask, torch.Tensor):  # reduced on its own device: only the per-axis profiles move
        found = [torch.nonzero(mask.any(dim=o) if o else mask).flatten().cpu().numpy() for o in others]
    else:
        found = [np.flatnonzero(mask.any(axis=o)) for o in others]
    if any(len(f) == 0 for f in found):
        return None
    margins = [int(margin)] * mask.ndim if isinstance(margin, (int, np.integer)) else [int(m) for m in margin]
    return tuple(slice(max(int(f[0]) - m, 0), min(int(f[-1]) + m + 1, size))
                 for f, m, size in zip(found, margins, mask.shape))
