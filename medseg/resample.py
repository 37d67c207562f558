"""Bring class probabilities from the network's grid back to the original image grid, slab by slab.

MONAI's resamplers build a sampling grid for the whole output at once (three float32 values per output
voxel); for a 512x512x280 CT that alone is ~880 MB per class. Here the output is produced a slab at a
time and reduced to labels immediately, so memory stays at the size of the uint8 label map plus one
slab, whatever the size of the scan.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _normalized_mapping(src_affine, dst_affine, src_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Matrix A and offset b mapping destination voxel indices to grid_sample's [-1, 1] source coords."""
    mapping = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    scale = 2.0 / np.maximum(np.asarray(src_shape, dtype=np.float64) - 1.0, 1.0)
    a = mapping[:3, :3] * scale[:, None]
    b = mapping[:3, 3] * scale - 1.0
    return torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)


@torch.inference_mode()
def probabilities_to_grid(
    probabilities: torch.Tensor,
    src_affine,
    dst_affine,
    dst_shape: tuple[int, int, int],
    keep_probabilities: bool = False,
    max_slab_voxels: int = 2**21,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample [K, *src] probabilities (trilinear) onto ``dst_shape`` with ``dst_affine`` and argmax.

    Voxels of the destination that fall outside the source grid (e.g. cropped-away air) are
    background. Returns uint8 labels and, if asked, float16 probabilities [K, *dst_shape].
    """
    device = probabilities.device
    src_shape = probabilities.shape[1:]
    a, b = (t.to(device) for t in _normalized_mapping(src_affine, dst_affine, src_shape))
    d, h, w = (int(s) for s in dst_shape)
    rows = torch.arange(h, device=device, dtype=torch.float32)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    plane = a[:, 1, None, None] * rows[None, :, None] + a[:, 2, None, None] * cols[None, None, :] + b[:, None, None]
    labels = np.empty((d, h, w), dtype=np.uint8)
    kept = np.empty((probabilities.shape[0], d, h, w), dtype=np.float16) if keep_probabilities else None
    # Shift background by -1 so that zero padding outside the source grid reads as background = 1.
    source = probabilities[None].float()
    source[:, 0] -= 1.0
    slab = max(1, max_slab_voxels // max(h * w, 1))
    for start in range(0, d, slab):
        index = torch.arange(start, min(start + slab, d), device=device, dtype=torch.float32)
        coords = plane[:, None] + a[:, 0, None, None, None] * index[None, :, None, None]
        grid = coords.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x, y, z) = (last, middle, first)
        out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        out[0] += 1.0
        labels[start : start + len(index)] = out.argmax(0).to(torch.uint8).cpu().numpy()
        if kept is not None:
            kept[:, start : start + len(index)] = out.cpu().numpy()
    source[:, 0] += 1.0  # ``source`` may share memory with the caller's tensor
    return labels, kept
