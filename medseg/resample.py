"""Bring class probabilities from the network's grid back to the original image grid, slab by slab.

MONAI's resamplers build a sampling grid for the whole output at once (three float32 values per output
voxel); for a 512x512x280 CT that alone is ~880 MB per class. Here the output is produced a slab at a
time and reduced to labels immediately, so memory stays at the size of the uint8 label map plus one
slab, whatever the size of the scan.

Preprocessing only reorients (axis permutations and flips) and rescales, so the map from original to
network voxels is almost always axis-aligned; trilinear interpolation is then done as three 1D linear
passes, several times faster than ``grid_sample`` with identical results. Any other map (e.g. a
rotated grid) goes through ``grid_sample``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F


def softmax_(logits: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Softmax in place: whole-volume logits are the largest tensor of a prediction."""
    logits.sub_(logits.amax(dim, keepdim=True)).exp_()
    return logits.div_(logits.sum(dim, keepdim=True))


def class_argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """uint8 argmax over the class axis 0 (``max(0).indices``: on CPU, ``argmax(0)`` is ~15x slower)."""
    return probabilities.max(0).indices.to(torch.uint8)


def _interpolation_matrix(coords: torch.Tensor, size: int) -> torch.Tensor:
    """[len(coords), size] matrix of linear-interpolation weights at fractional indices; zero outside."""
    low = torch.floor(coords)
    weight = (coords - low).float()
    low = low.long()
    matrix = torch.zeros(len(coords), size + 2)  # one spare column each side for out-of-range corners
    rows = torch.arange(len(coords))
    matrix[rows, (low + 1).clamp(0, size + 1)] += 1 - weight
    matrix[rows, (low + 2).clamp(0, size + 1)] += weight
    return matrix[:, 1:-1].to(coords.device)


def _axis_permutation(matrix: np.ndarray) -> list[int] | None:
    """For a scaled permutation matrix (one non-zero per row and column), the destination axis each
    source axis follows; None for any other (oblique) matrix."""
    nonzero = np.abs(matrix) > 1e-6 * np.abs(matrix).max()
    if not (nonzero.sum(0) == 1).all() or not (nonzero.sum(1) == 1).all():
        return None
    return [int(np.flatnonzero(row)[0]) for row in nonzero]


def _lerp(x: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional indices ``coords``; zero outside. The
    result is float32 whatever ``x`` is (float16 probabilities are converted a slab at a time)."""
    size = x.shape[dim]
    low = torch.floor(coords)
    weight = (coords - low).float()
    low = low.long()
    high = low + 1
    shape = [1] * x.ndim
    shape[dim] = -1
    w_low = ((1 - weight) * ((low >= 0) & (low < size))).view(shape)
    w_high = (weight * ((high >= 0) & (high < size))).view(shape)
    return (x.index_select(dim, low.clamp(0, size - 1)).float() * w_low
            + x.index_select(dim, high.clamp(0, size - 1)).float() * w_high)


def _coverage(coords: torch.Tensor, size: int) -> torch.Tensor:
    """How much of each linear interpolation at ``coords`` falls inside ``size`` samples (1 inside, less
    in the half-voxel band at the border, 0 outside): ``_lerp`` of a volume of ones."""
    low = torch.floor(coords)
    weight = (coords - low).float()
    low = low.long()
    return (1 - weight) * ((low >= 0) & (low < size)) + weight * ((low + 1 >= 0) & (low + 1 < size))


def _separable_slabs(source: torch.Tensor, mapping: np.ndarray, order: list[int], dst_shape, slab: int,
                     fill: float = 0.0):
    """Yield (start, [K, s, H, W]) float32 slabs of the trilinear resampling of [K, ...] ``source``, one
    axis at a time; outside the source grid class 0 reads ``fill`` and the others zero."""
    src_axes = [order.index(j) for j in range(3)]  # source axis that follows destination axis j
    aligned = source.permute(0, *(1 + a for a in src_axes))
    device = source.device
    coords = [
        torch.arange(n, device=device, dtype=torch.float64) * mapping[a, j] + mapping[a, 3]
        for j, (a, n) in enumerate(zip(src_axes, dst_shape))
    ]
    # The last (contiguous) axis as a matrix product: index_select along it is the slow part otherwise.
    last = _interpolation_matrix(coords[2], aligned.shape[3]).T.contiguous()
    inside = [_coverage(c, aligned.shape[1 + j]) for j, c in enumerate(coords)]
    plane = inside[1][:, None] * inside[2][None, :]
    for start in range(0, dst_shape[0], slab):
        part = _lerp(aligned, 1, coords[0][start : start + slab])
        part = _lerp(part, 2, coords[1])
        part = part @ last
        if fill:
            part[0] += fill * (1 - inside[0][start : start + slab, None, None] * plane)
        yield start, part


def _grid_sample_slabs(source: torch.Tensor, mapping: np.ndarray, dst_shape, slab: int, fill: float = 0.0):
    """Yield (start, [K, s, H, W]) float32 slabs of [K, ...] ``source`` resampled with ``grid_sample`` (any
    affine map); outside the source grid class 0 reads ``fill`` and the others zero. Works on a float32
    copy of the source: an oblique grid is rare."""
    device = source.device
    source = source.to(torch.float32, copy=True)
    source[0] -= fill  # zero padding outside the grid then reads as ``fill`` once added back
    scale = 2.0 / np.maximum(np.asarray(source.shape[1:], dtype=np.float64) - 1.0, 1.0)
    a = torch.as_tensor(mapping[:3, :3] * scale[:, None], dtype=torch.float32, device=device)
    b = torch.as_tensor(mapping[:3, 3] * scale - 1.0, dtype=torch.float32, device=device)
    d, h, w = dst_shape
    rows = torch.arange(h, device=device, dtype=torch.float32)
    cols = torch.arange(w, device=device, dtype=torch.float32)
    plane = a[:, 1, None, None] * rows[None, :, None] + a[:, 2, None, None] * cols[None, None, :] + b[:, None, None]
    for start in range(0, d, slab):
        index = torch.arange(start, min(start + slab, d), device=device, dtype=torch.float32)
        coords = plane[:, None] + a[:, 0, None, None, None] * index[None, :, None, None]
        grid = coords.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x, y, z) = (last, middle, first)
        part = F.grid_sample(source[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        part[0] += fill
        yield start, part


def _slabs(source: torch.Tensor, src_affine: npt.ArrayLike, dst_affine: npt.ArrayLike,
           dst_shape: tuple[int, int, int], slab: int, fill: float):
    """Yield (start, [K, s, H, W]) float32 slabs of [K, ...] ``source`` resampled onto the destination
    grid, class 0 reading ``fill`` outside the source grid."""
    mapping = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
    order = _axis_permutation(mapping[:3, :3])
    if order is not None:
        return _separable_slabs(source, mapping, order, dst_shape, slab, fill)
    return _grid_sample_slabs(source, mapping, dst_shape, slab, fill)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Per-voxel entropy (nats) over the class axis 0: 0 where one class is certain, log K at most."""
    p = probabilities.clamp_min(1e-12)
    return -(p * p.log()).sum(0)


@dataclass
class GridResult:
    """Labels on the destination grid, and the probabilities and entropy map when asked for."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None
    entropy: np.ndarray | None = None


MIXED = 255  # a cell whose corners disagree on the label (or that leaves the grid): interpolate it
MOST_MIXED = 0.05  # above this fraction of mixed cells, interpolating every class everywhere is faster


def _cell_labels(labels: torch.Tensor) -> torch.Tensor:
    """For each cell of the source grid (voxel i and its next neighbour along every axis, the last
    voxel with itself), the label all eight corners share, or ``MIXED``. Linear interpolation inside
    a cell is a convex combination of its corners, so where every corner has class c most probable,
    so has every point of the cell: its argmax is known without interpolating the probabilities."""
    cells = labels.clone()
    for offset in product((0, 1), repeat=3):
        if any(offset):
            index = tuple(slice(o, None) for o in offset)
            shifted = labels[index]
            region = tuple(slice(0, n) for n in shifted.shape)
            cells[region][shifted != labels[region]] = MIXED
    return cells


def _labels_by_cells(probabilities: torch.Tensor, mapping: np.ndarray, order: list[int],
                     dst_shape: tuple[int, int, int], slab: int) -> np.ndarray | None:
    """The argmax of the trilinear resampling of [K, ...] ``probabilities`` (one source, labels only),
    interpolating only where the source's label changes within a cell or the grid ends (class 0 is
    certain outside, as in ``average_to_grid``). The same labels, several times faster: most of a
    scan lies inside one organ or in the background. None where too many cells are mixed for that
    to pay (an untrained network's noise)."""
    src_axes = [order.index(j) for j in range(3)]
    aligned = probabilities.permute(0, *(1 + a for a in src_axes))
    sizes = aligned.shape[1:]
    cells = _cell_labels(class_argmax(aligned))
    if (cells == MIXED).sum() > MOST_MIXED * cells.numel():
        return None
    coords = [torch.arange(n, dtype=torch.float64) * mapping[a, j] + mapping[a, 3]
              for j, (a, n) in enumerate(zip(src_axes, dst_shape))]
    lows = [torch.floor(c).long() for c in coords]
    weights = [(c - low).float() for c, low in zip(coords, lows)]
    inside = [_coverage(c, n) >= 1 - 1e-6 for c, n in zip(coords, sizes)]
    lookups = [low.clamp(0, n - 1) for low, n in zip(lows, sizes)]
    labels = np.empty(dst_shape, dtype=np.uint8)
    for start in range(0, dst_shape[0], slab):
        stop = min(start + slab, dst_shape[0])
        part = cells.index_select(0, lookups[0][start:stop]).index_select(1, lookups[1])
        part = part.index_select(2, lookups[2])
        part[~(inside[0][start:stop, None, None] & inside[1][None, :, None] & inside[2][None, None, :])] = MIXED
        mixed = (part == MIXED).nonzero()
        if len(mixed):
            points = [mixed[:, 0] + start, mixed[:, 1], mixed[:, 2]]
            values = torch.zeros((aligned.shape[0], len(mixed)))
            coverage = torch.zeros(len(mixed))
            for corner in product((0, 1), repeat=3):
                weight = torch.ones(len(mixed))
                index = []
                for axis, high in enumerate(corner):
                    position = lows[axis][points[axis]] + high
                    fraction = weights[axis][points[axis]]
                    valid = (position >= 0) & (position < sizes[axis])
                    weight = weight * (fraction if high else 1 - fraction) * valid
                    index.append(position.clamp(0, sizes[axis] - 1))
                values += aligned[:, index[0], index[1], index[2]].float() * weight
                coverage += weight
            values[0] += 1 - coverage
            part[mixed[:, 0], mixed[:, 1], mixed[:, 2]] = class_argmax(values)
        labels[start:stop] = part.numpy()
    return labels


@torch.inference_mode()
def average_to_grid(
    sources: Sequence[tuple[torch.Tensor, npt.ArrayLike, int]],
    dst_affine: npt.ArrayLike,
    dst_shape: tuple[int, int, int],
    keep_probabilities: bool = False,
    with_entropy: bool = False,
    max_slab_voxels: int = 2**19,
) -> GridResult:
    """The mean of several models' class probabilities on the destination grid, slab by slab, then the
    argmax. Each source is (the mean [K, ...] probabilities of ``members`` models on one grid, that
    grid's affine, ``members``) and weighs as that many models: models that share a grid are averaged
    there first, so an ensemble keeps one probability volume per distinct grid, not one per model.
    Voxels outside a source's grid count as background for it. Returns uint8 labels, and if asked
    float16 probabilities [K, *dst_shape] and the float32 entropy of the mean."""
    d, h, w = (int(s) for s in dst_shape)
    if len(sources) == 1 and not keep_probabilities and not with_entropy:
        probabilities, src_affine, _ = sources[0]
        mapping = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ np.asarray(dst_affine, dtype=np.float64)
        order = _axis_permutation(mapping[:3, :3])
        if order is not None and probabilities.device.type == "cpu" and probabilities.shape[0] < MIXED:
            slab = max(1, 8 * max_slab_voxels // max(h * w, 1))  # a slab of labels is small
            by_cells = _labels_by_cells(probabilities, mapping, order, (d, h, w), slab)
            if by_cells is not None:
                return GridResult(by_cells)
    members = sum(count for _, _, count in sources)
    labels = np.empty((d, h, w), dtype=np.uint8)
    classes = sources[0][0].shape[0]
    kept = np.empty((classes, d, h, w), dtype=np.float16) if keep_probabilities else None
    uncertainty = np.empty((d, h, w), dtype=np.float32) if with_entropy else None
    slab = max(1, max_slab_voxels // max(h * w, 1))
    # Outside its grid a source reads as certain background; its probabilities (float32 or float16)
    # are converted to float32 a slab at a time, never copied whole.
    generators = [_slabs(probabilities, affine, dst_affine, (d, h, w), slab, fill=1.0)
                  for probabilities, affine, _ in sources]
    weights = [count / members for _, _, count in sources]
    for parts in zip(*generators):
        start = parts[0][0]
        out = parts[0][1].mul_(weights[0])
        for (_, part), weight in zip(parts[1:], weights[1:]):  # in place: no stacked copy of every slab
            out.add_(part, alpha=weight)
        stop = start + out.shape[1]
        labels[start:stop] = class_argmax(out).cpu().numpy()
        if kept is not None:
            kept[:, start:stop] = out.cpu().numpy()
        if uncertainty is not None:
            uncertainty[start:stop] = entropy(out).cpu().numpy()
    return GridResult(labels, kept, uncertainty)


def probabilities_to_grid(
    probabilities: torch.Tensor,
    src_affine: npt.ArrayLike,
    dst_affine: npt.ArrayLike,
    dst_shape: tuple[int, int, int],
    keep_probabilities: bool = False,
    max_slab_voxels: int = 2**19,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resample [K, *src] probabilities (trilinear) onto ``dst_shape`` with ``dst_affine`` and argmax.

    Voxels of the destination that fall outside the source grid (e.g. cropped-away air) are
    background. Returns uint8 labels and, if asked, float16 probabilities [K, *dst_shape].
    """
    result = average_to_grid([(probabilities, src_affine, 1)], dst_affine, dst_shape, keep_probabilities,
                             max_slab_voxels=max_slab_voxels)
    return result.labels, result.probabilities


def _lerp_border(x: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional indices ``coords``, clamped to the
    first and last sample outside (``grid_sample``'s border padding); float32 whatever ``x`` is."""
    size = x.shape[dim]
    coords = coords.clamp(0, size - 1)
    low = torch.floor(coords)
    shape = [1] * x.ndim
    shape[dim] = -1
    weight = (coords - low).float().view(shape)
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    below = x.index_select(dim, low).float()
    return below.add_((x.index_select(dim, high).float() - below).mul_(weight))


@torch.no_grad()  # not inference_mode: the preprocessing after it changes the image in place
def resample_image(
    array: np.ndarray, mapping: np.ndarray, dst_shape: Sequence[int], max_slab_voxels: int = 2**22,
) -> torch.Tensor:
    """Trilinear resampling of a 3D ``array`` (any numeric dtype) onto a grid of ``dst_shape`` whose voxel
    ``i`` sits at source voxel ``mapping @ i`` (4x4), with border padding: what MONAI's ``Spacing``
    computes with ``grid_sample``, a destination slab at a time and never on a float copy of the whole
    source (a 512x512x1600 CT is 1.7 GB as float32, its int16 voxels half that). Returns float32."""
    source = torch.from_numpy(np.asarray(array))
    d, h, w = (int(s) for s in dst_shape)
    order = _axis_permutation(mapping[:3, :3])
    if order is None:  # orienting and rescaling only ever permute, flip and scale axes
        raise ValueError(f"resample_image: the map is not axis-aligned:\n{mapping}")
    src_axes = [order.index(j) for j in range(3)]
    aligned = source.permute(*src_axes)
    coords = [torch.arange(n, dtype=torch.float64) * mapping[a, j] + mapping[a, 3]
              for j, (a, n) in enumerate(zip(src_axes, (d, h, w)))]
    out = torch.empty((d, h, w), dtype=torch.float32)
    slab = max(1, max_slab_voxels // max(aligned.shape[1] * aligned.shape[2], 1))
    for start in range(0, d, slab):
        part = _lerp_border(aligned, 0, coords[0][start : start + slab])
        part = _lerp_border(part, 1, coords[1])
        out[start : start + part.shape[0]] = _lerp_border(part, 2, coords[2])
    return out
