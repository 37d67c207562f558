"""The dataset fingerprint: what planning needs to know about the training cases, read once.

Per case (in parallel processes where there are enough cases): spacing and shape in RAS axis order
(the order preprocessing puts volumes in), the shape after cropping to the body (as preprocessing
crops), a sample of foreground intensities, voxel counts per class and where each class lies relative
to the whole foreground. The dataset's fingerprint aggregates them.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from nibabel.orientations import io_orientation

from medseg.data.datasets import Case
from medseg.errors import MedsegError
from medseg.io import read_volume

CT_BODY_THRESHOLD_HU = -500.0  # as preprocessing's foreground crop
INTENSITY_SAMPLES_PER_CASE = 10_000  # as nnU-Net: enough for percentiles, small to keep
PARALLEL_FROM = 8  # fewer cases are read faster in this process than by starting workers


@dataclass
class CaseFingerprint:
    """One case: RAS-ordered ``spacing`` (mm) and ``shape``, ``cropped_shape`` after the body crop,
    ``intensities`` sampled inside the labels, ``class_voxels`` [K] and ``class_offsets`` [K, 3]: mm from
    the whole foreground's centroid to each class's centroid along each RAS axis (0 where absent)."""

    case_id: str
    spacing: list[float]
    shape: list[int]
    cropped_shape: list[int]
    intensities: np.ndarray
    class_voxels: list[int]
    class_offsets: list[list[float]]


def _ras_order(affine: np.ndarray) -> np.ndarray:
    """For each array axis, the RAS axis it becomes after reorientation."""
    return io_orientation(affine)[:, 0].astype(int)


def case_fingerprint(case: Case, ct: bool, num_classes: int) -> CaseFingerprint:
    """Read one labelled case and measure it."""
    if case.label is None:
        raise MedsegError(f"{case.image}: planning needs a label map for every training case")
    image, label = read_volume(case.image), read_volume(case.label)
    order = _ras_order(image.affine)
    spacing, shape = np.zeros(3), np.zeros(3, dtype=int)
    spacing[order] = np.linalg.norm(image.affine[:3, :3], axis=0)
    shape[order] = image.array.shape
    array = image.array.astype(np.float32, copy=False)
    body = array > CT_BODY_THRESHOLD_HU if ct else array > array.min()
    cropped = np.zeros(3, dtype=int)
    for axis in range(3):
        found = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))
        cropped[order[axis]] = (found[-1] - found[0] + 1) if len(found) else array.shape[axis]
    labels = label.array.astype(np.int64, copy=False)
    foreground = labels > 0
    values = array[foreground]
    rng = np.random.default_rng(zlib.crc32(case.case_id.encode()))
    if values.size > INTENSITY_SAMPLES_PER_CASE:
        values = rng.choice(values, INTENSITY_SAMPLES_PER_CASE, replace=False)
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    offsets = np.zeros((num_classes, 3))
    if foreground.any():
        world = np.argwhere(foreground) @ image.affine[:3, :3].T  # voxel -> mm, without the origin (it cancels)
        centre = world.mean(0)
        point_labels = labels[foreground]
        for k in range(1, num_classes):
            chosen = point_labels == k
            if chosen.any():
                offsets[k] = world[chosen].mean(0) - centre
    return CaseFingerprint(case.case_id, [round(float(s), 4) for s in spacing], shape.tolist(), cropped.tolist(),
                           values.astype(np.float32), counts.tolist(), offsets.round(2).tolist())


def _measure(args: tuple[Case, bool, int]) -> CaseFingerprint:
    return case_fingerprint(*args)


@dataclass
class Fingerprint:
    """The training cases' fingerprint. Per-case lists are in case order; intensities are pooled."""

    cases: list[CaseFingerprint] = field(default_factory=list)

    @property
    def num_cases(self) -> int:
        return len(self.cases)

    @property
    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def cropped_shapes(self) -> np.ndarray:
        return np.array([c.cropped_shape for c in self.cases], dtype=np.float64)

    def intensity_statistics(self) -> dict[str, float]:
        """Foreground intensity percentiles 0.5/50/99.5, mean and std, pooled over the cases."""
        values = np.concatenate([c.intensities for c in self.cases]) if self.cases else np.zeros(0)
        if values.size == 0:
            return {}
        low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
        return {"p00_5": float(low), "median": float(median), "p99_5": float(high),
                "mean": float(values.mean()), "std": float(values.std())}

    def class_voxels(self) -> np.ndarray:
        """[cases, K] voxel counts."""
        return np.array([c.class_voxels for c in self.cases], dtype=np.int64)

    def class_volumes_ml(self) -> np.ndarray:
        """[cases, K] class volumes in millilitres (0 where absent)."""
        voxel_ml = np.prod(self.spacings, axis=1) / 1000.0
        return self.class_voxels() * voxel_ml[:, None]

    def class_offsets(self) -> np.ndarray:
        """[cases, K, 3] mm from the foreground's centroid to each class's along each RAS axis."""
        return np.array([c.class_offsets for c in self.cases], dtype=np.float64)


def measure_dataset(cases: list[Case], ct: bool, num_classes: int, workers: int | None = None) -> Fingerprint:
    """The fingerprint of ``cases``: in worker processes when there are enough cases and cores."""
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(case, ct, num_classes) for case in cases]
    if workers > 1 and len(cases) >= PARALLEL_FROM:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return Fingerprint(list(pool.map(_measure, jobs, chunksize=4)))
    return Fingerprint([_measure(job) for job in jobs])
