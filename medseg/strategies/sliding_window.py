"""Sliding-window prediction that stitches a rolling slab of the volume, not the whole volume.

MONAI's ``sliding_window_inference`` accumulates the weighted window outputs of the whole volume in
float32, with a count map beside them: for 8 classes and the 244x202x960 grid of a 512x512x1600 CT,
1.7 GB before the softmax, and an ensemble holds one such volume per member as it runs. Here windows
are visited in order of their start along the longest axis; once every window that reaches a row has
been added, the row is final, so it is normalised, turned into probabilities and handed on, and the
rolling buffer only ever spans one window along that axis. The caller can store the probabilities as
float16 (nnU-Net v2 stores its logits so).

Window positions, padding of volumes smaller than a window and the importance map (gaussian or
constant) follow MONAI's rules exactly, so the probabilities equal the softmax of
``SlidingWindowInferer``'s output (tests hold it to that).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import product

import torch
import torch.nn.functional as F
from monai.data.utils import compute_importance_map, dense_patch_slices

from medseg.resample import softmax_

WindowPredictor = Callable[[torch.Tensor], torch.Tensor]  # [B, C, *roi] -> [B, K, *roi] logits


@dataclass(frozen=True)
class WindowSettings:
    """How windows tile a volume: their size, the fraction consecutive windows overlap, how outputs are
    blended (``gaussian`` or ``constant``), how many run as one batch, and where they run."""

    roi: tuple[int, int, int]
    overlap: float
    blend: str
    batch_size: int
    device: torch.device


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Where windows start along one axis of ``size`` voxels (at least ``roi``): every
    ``int(roi * (1 - overlap))`` voxels, the last one flush with the end (MONAI's rule)."""
    interval = roi if roi == size else max(int(roi * (1 - overlap)), 1)
    return [s[0].start for s in dense_patch_slices((size,), (roi,), (interval,))]


def _padding(shape: Sequence[int], roi: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis, the zeros added before and after so that a volume is at least one window (MONAI pads
    the difference half before, half after)."""
    return [((r - s) // 2, r - s - (r - s) // 2) if s < r else (0, 0) for s, r in zip(shape, roi)]


def stream_probabilities(
    image: torch.Tensor, predict: WindowPredictor, settings: WindowSettings,
) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Yield ``(axis, start, stop, probabilities)``: the softmax probabilities [K, ...] of the blended
    window logits for rows ``start:stop`` along spatial ``axis`` of ``image`` [C, D, H, W], in order,
    covering the whole volume."""
    shape = list(image.shape[1:])
    roi = list(settings.roi)
    padding = _padding(shape, roi)
    if any(before or after for before, after in padding):
        flat = [amount for pair in reversed(padding) for amount in pair]  # F.pad wants the last axis first
        image = F.pad(image, flat)
    padded = list(image.shape[1:])
    axis = max(range(3), key=lambda a: padded[a])  # the longest axis: the rolling buffer spans one window of it
    starts = [window_starts(padded[a], roi[a], settings.overlap) for a in range(3)]
    across = [starts[a] for a in range(3) if a != axis]
    weight = compute_importance_map(tuple(roi), mode=settings.blend, device=settings.device, dtype=torch.float32)
    buffer_shape = list(padded)
    buffer_shape[axis] = roi[axis]
    sums: torch.Tensor | None = None  # the rolling buffer of weighted logits
    counts = torch.zeros([1, *buffer_shape], device=settings.device)
    along = starts[axis]
    for step, start in enumerate(along):
        corners = [(*c[:axis], start, *c[axis:]) for c in product(*across)]
        for first in range(0, len(corners), settings.batch_size):
            batch = corners[first : first + settings.batch_size]
            windows = [tuple(slice(c[a], c[a] + roi[a]) for a in range(3)) for c in batch]
            inputs = torch.stack([image[(slice(None), *w)] for w in windows]).to(settings.device)
            outputs = predict(inputs).float().mul_(weight)
            if sums is None:
                sums = torch.zeros([outputs.shape[1], *buffer_shape], device=settings.device)
            for output, window in zip(outputs, windows):
                local = list(window)
                local[axis] = slice(0, roi[axis])
                counts[(slice(None), *local)] += weight
                sums[(slice(None), *local)] += output
        assert sums is not None
        final = (along[step + 1] if step + 1 < len(along) else padded[axis]) - start  # rows no later window reaches
        probabilities = softmax_(sums.narrow(axis + 1, 0, final) / counts.narrow(axis + 1, 0, final))
        yield from _unpadded(axis, start, final, probabilities, padding, shape)
        for buffer in (sums, counts):  # roll: the next window starts ``final`` rows further on
            kept = buffer.narrow(axis + 1, final, roi[axis] - final).clone()
            buffer.zero_().narrow(axis + 1, 0, roi[axis] - final).copy_(kept)


def _unpadded(axis: int, start: int, rows: int, probabilities: torch.Tensor, padding: list[tuple[int, int]],
              shape: list[int]) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """The part of a padded slab that lies in the original volume, in its coordinates (if any)."""
    before = padding[axis][0]
    low, high = max(start, before), min(start + rows, before + shape[axis])
    if low >= high:
        return
    crop = [slice(p[0], p[0] + s) for p, s in zip(padding, shape)]
    crop[axis] = slice(low - start, high - start)
    yield axis, low - before, high - before, probabilities[(slice(None), *crop)]


def sliding_window_probabilities(
    image: torch.Tensor, predict: WindowPredictor, settings: WindowSettings, device: torch.device,
    dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """The probabilities [K, D, H, W] for ``image`` [C, D, H, W], stored on ``device`` as ``dtype``
    (float16 by default: half the memory, ample for an argmax or a mean)."""
    result: torch.Tensor | None = None
    for axis, start, stop, probabilities in stream_probabilities(image, predict, settings):
        if result is None:
            result = torch.empty((probabilities.shape[0], *image.shape[1:]), dtype=dtype, device=device)
        result.narrow(axis + 1, start, stop - start).copy_(probabilities)
    assert result is not None  # every volume has at least one window
    return result
