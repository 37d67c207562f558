"""The planning rules, each a small function of the fingerprint that returns a value and its reason.

They follow nnU-Net v2's experiment planner (target spacing with the anisotropic-axis rule, patch size
from the median shape within a compute budget, pooling and kernels per axis from the spacing, batch
size capped to a share of the dataset, CT normalisation from foreground statistics) and add what a
time-boxed run needs: the compute budget comes from the device and the minutes the run may take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.planning.fingerprint import Fingerprint

ANISOTROPY = 3.0  # nnU-Net's threshold: one axis this many times coarser than the others
MIN_FEATURE_MAP = 4  # the bottleneck's smallest edge
MAX_POOLINGS = 5
MAX_DATASET_SHARE = 0.05  # one batch sees at most this share of the dataset's voxels (nnU-Net)
LATERAL_AGREEMENT = 0.9  # two classes mirror each other in at least this share of the cases holding both
MIN_SIDE_MM = 2.0  # a class centroid closer than this to the foreground's centre is on neither side


@dataclass
class Planned:
    """A planned value and the one-line reason written beside it."""

    value: Any
    reason: str


def target_spacing(fp: Fingerprint) -> Planned:
    """The median spacing; on an anisotropic dataset whose coarse axis also has few voxels, that axis
    takes the 10th percentile of its spacings instead (never finer than the other axes), so the few
    slices of coarse cases are not interpolated into many."""
    spacings, sizes = fp.spacings, fp.cropped_shapes
    target = np.median(spacings, axis=0)
    median_size = np.median(sizes, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY * max(target[others])
    aniso_voxels = median_size[worst] * ANISOTROPY < min(median_size[others])
    reason = f"median spacing of {fp.num_cases} cases"
    if aniso_spacing and aniso_voxels:
        tenth = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(tenth, float(max(target[others])) + 1e-5)
        reason += f"; axis {worst} anisotropic (>{ANISOTROPY:g}x, few slices): its 10th percentile"
    return Planned([round(float(s), 4) for s in target], reason)


def resampled_median_shape(fp: Fingerprint, spacing: list[float]) -> np.ndarray:
    """The median of the cases' cropped shapes after resampling to ``spacing``."""
    return np.median(fp.cropped_shapes * fp.spacings / np.asarray(spacing), axis=0)


def pooling(spacing: list[float], patch: list[int]) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Strides and kernel sizes per stage for a U-Net on ``patch`` voxels at ``spacing`` mm (nnU-Net's
    rule): an axis is pooled while it is within 2x of the finest current spacing and its feature map
    stays at least ``MIN_FEATURE_MAP`` (twice that for an axis pooled alone); its kernel is 3 from the
    stage where its spacing comes within 2x of the finest, 1 before (in-plane convolutions on thick
    slices), and 3 everywhere in the bottleneck. Returns
    strides (the first stage's is 1), kernels (one per stage) and the factor each side must divide."""
    current_spacing, size = list(map(float, spacing)), list(map(float, patch))
    strides: list[list[int]] = [[1, 1, 1]]
    kernels: list[list[int]] = []
    kernel = [1, 1, 1]
    pools = [0, 0, 0]
    while True:
        finest = min(current_spacing)
        kernel = [3 if k == 3 or s / finest < 2 else 1 for k, s in zip(kernel, current_spacing)]  # 3 stays 3
        axes = [a for a in range(3) if size[a] >= 2 * MIN_FEATURE_MAP and current_spacing[a] / finest < 2
                and pools[a] < MAX_POOLINGS]
        if len(axes) == 1 and size[axes[0]] < 3 * MIN_FEATURE_MAP:
            axes = []
        if not axes:
            kernels.append([3, 3, 3])  # the bottleneck
            break
        kernels.append(list(kernel))
        stride = [2 if a in axes else 1 for a in range(3)]
        for a in axes:
            pools[a] += 1
            current_spacing[a] *= 2
            size[a] = np.ceil(size[a] / 2)
        strides.append(stride)
    return strides, kernels, [2**p for p in pools]


def fit_patch(spacing: list[float], median_shape: np.ndarray, max_voxels: float) -> list[int]:
    """The largest patch of about ``max_voxels`` voxels with the aspect ratio of the spacing (isotropic in
    mm), no side longer than the median shape rounded up to the network's divisor, every side divisible
    by the network's total stride on that axis."""
    aspect = 1.0 / np.asarray(spacing)
    patch = aspect * (max_voxels / np.prod(aspect)) ** (1 / 3)
    patch = np.minimum(patch, median_shape)
    for _ in range(64):
        _, _, divisor = pooling(spacing, [max(int(round(p)), 1) for p in patch])
        sized = [max(int(np.ceil(p / d)) * d, d) for p, d in zip(patch, divisor)]
        if np.prod(sized, dtype=np.float64) <= max_voxels * 1.15:
            return sized
        largest = int(np.argmax(np.asarray(sized) / np.maximum(median_shape, 1)))
        patch[largest] = max(sized[largest] - divisor[largest], divisor[largest])
    return sized


def samples_per_volume(patch: list[int], fp: Fingerprint, spacing: list[float]) -> Planned:
    """Crops drawn from each loaded image: one where the patch covers the median image, since a second
    crop would be the same image again (only its augmentation differs), else two."""
    median = resampled_median_shape(fp, spacing)
    if all(p >= m for p, m in zip(patch, median)):
        return Planned(1, "the patch covers the median image: a second crop would repeat it")
    return Planned(2, "two crops of each loaded image")


def batch_size(patch: list[int], fp: Fingerprint, spacing: list[float], preferred_samples: int,
               per_volume: int) -> Planned:
    """Images a step, ``per_volume`` crops each: ``preferred_samples`` crops, at least 2, and no more than
    ``MAX_DATASET_SHARE`` of the dataset's voxels in one step (nnU-Net's cap)."""
    dataset_voxels = float(np.prod(resampled_median_shape(fp, spacing))) * fp.num_cases
    cap = max(2, int(dataset_voxels * MAX_DATASET_SHARE // np.prod(patch, dtype=np.float64)))
    samples = max(2, min(preferred_samples, cap))
    size = max(1, samples // per_volume)
    crops = f"{size} images x {per_volume} crops"
    if samples == preferred_samples:
        return Planned(size, f"{crops}: {preferred_samples} samples a step for the budget")
    return Planned(size, f"{crops}: a step sees at most {MAX_DATASET_SHARE:.0%} of the dataset's voxels")


def ct_normalisation(fp: Fingerprint) -> dict[str, Planned]:
    """CT: clip to the foreground's 0.5-99.5 percentiles, then z-score with the foreground's mean and
    std (nnU-Net's CTNormalization), so Hounsfield units mean the same in every case."""
    stats = fp.intensity_statistics()
    where = f"foreground of {fp.num_cases} cases"
    return {
        "normalization": Planned("ct_zscore", "CT: clip to foreground percentiles, z-score with foreground mean/std"),
        "intensity_window": Planned([round(stats["p00_5"], 1), round(stats["p99_5"], 1)],
                                    f"0.5 and 99.5 percentiles of the {where}"),
        "intensity_mean": Planned(round(stats["mean"], 2), f"mean of the {where}"),
        "intensity_std": Planned(round(max(stats["std"], 1e-3), 2), f"std of the {where}"),
    }


def _mirror_pairs(offsets: np.ndarray, volumes: np.ndarray, axis: int) -> bool:
    """Whether two classes mirror each other along ``axis`` in one case: on opposite sides of the
    foreground's centre, at similar distances (within 2x) and of similar size (within 2x)."""
    (a, b), (va, vb) = offsets[:, axis], volumes
    if a * b >= 0 or min(abs(a), abs(b)) < MIN_SIDE_MM or min(va, vb) <= 0:
        return False
    return max(abs(a), abs(b)) / min(abs(a), abs(b)) <= 2 and max(va, vb) / min(va, vb) <= 2


def mirror_axes(fp: Fingerprint, class_names: list[str]) -> Planned:
    """Axes along which flipping cannot swap lateralised classes: an axis is left out when two classes
    mirror each other along it (opposite sides, similar distance and size) in at least
    ``LATERAL_AGREEMENT`` of the cases holding both: left and right parotids, anterior and posterior
    hippocampus. Flipping there would teach the network that one is the other."""
    offsets, volumes = fp.class_offsets(), fp.class_voxels()
    blocked: dict[int, str] = {}
    for axis in range(3):
        for i in range(1, len(class_names)):
            for j in range(i + 1, len(class_names)):
                both = (volumes[:, i] > 0) & (volumes[:, j] > 0)
                if axis in blocked or both.sum() < 3:
                    continue
                mirrored = [_mirror_pairs(o[[i, j]], v[[i, j]], axis) for o, v in zip(offsets[both], volumes[both])]
                if np.mean(mirrored) >= LATERAL_AGREEMENT:
                    blocked[axis] = f"{class_names[i]} and {class_names[j]} mirror each other"
    axes = [a for a in range(3) if a not in blocked]
    if not blocked:
        return Planned(axes, "no two classes mirror each other along any axis")
    return Planned(axes, "; ".join(f"not {'RAS'[a]}: {why}" for a, why in sorted(blocked.items())))


def class_ratios(fp: Fingerprint, class_names: list[str]) -> Planned:
    """Crop centres drawn per class (MONAI ``RandCropByLabelClassesd``): background once, then every
    foreground class alike whatever its size, so the smallest organs are seen as often as the largest."""
    present = (fp.class_voxels() > 0).sum(axis=0)
    ratios = [1.0] + [1.0 if present[k] else 0.0 for k in range(1, len(class_names))]
    rare = [f"{class_names[k]} {present[k]}/{fp.num_cases}" for k in range(1, len(class_names))
            if 0 < present[k] < 0.9 * fp.num_cases]
    note = f"; present in fewer cases: {', '.join(rare)}" if rare else ""
    return Planned(ratios, f"background and each class equally often{note}")


def partial_classes(fp: Fingerprint, class_names: list[str]) -> Planned:
    """Always none: whether a label map that lacks a class left it uncontoured, or the class is not there,
    cannot be read from the labels, so the user declares it. The reason names the candidates: classes
    missing from more than a tenth of the cases."""
    present = (fp.class_voxels() > 0).sum(axis=0)
    missing = [f"{class_names[k]} (in {present[k]}/{fp.num_cases})" for k in range(1, len(class_names))
               if present[k] < 0.9 * fp.num_cases]
    if not missing:
        return Planned([], "every class is in at least 90% of the cases")
    return Planned([], f"declared, not planned; list those of {', '.join(missing)} that some cases leave uncontoured")


def cpu_bf16(native_bf16: bool) -> Planned:
    """bf16 autocast for training on a CPU that computes bf16 in hardware (AMX or AVX512-BF16), where it
    was faster for every strategy's planned network (``engine/speed.py`` has the figures); never where
    bf16 would be emulated, many times slower than fp32."""
    if native_bf16:
        return Planned(True, "bf16 autocast: this CPU computes bf16 natively (AMX or AVX512-BF16)")
    return Planned(False, "fp32: this CPU has no native bf16 (emulated, it is many times slower)")
