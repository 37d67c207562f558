"""The DICOM series a prediction was made from, and the prediction laid onto its frames pixel for pixel.

DICOM outputs (SEG, RTSTRUCT) refer to the source slices one by one, so each slice's labels are taken
from the prediction by geometry: every pixel of every source frame is located in patient space from the
frame's own position, orientation and pixel spacing, then found in the prediction's grid through its
affine. Nothing is assumed about axis order, flips or which way the slices run; a frame that does not
land on voxel centres of the prediction (a different grid) is refused instead of shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from medseg.dicom import choose_series
from medseg.errors import MedsegError

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
            "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
GRID_TOLERANCE = 0.05  # voxels: how far a frame's pixel centre may sit from a voxel centre of the prediction
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class FrameGeometry:
    """Where a frame's pixels are: pixel (row r, column c) sits at ``origin + c * column_step + r * row_step``
    (patient coordinates, LPS, mm)."""

    origin: np.ndarray
    column_step: np.ndarray
    row_step: np.ndarray

    @classmethod
    def of(cls, dataset: Dataset) -> FrameGeometry:
        orientation = np.asarray(dataset.ImageOrientationPatient, dtype=np.float64)
        row_spacing, column_spacing = (float(s) for s in dataset.PixelSpacing)  # between rows, between columns
        return cls(np.asarray(dataset.ImagePositionPatient, dtype=np.float64),
                   orientation[:3] * column_spacing, orientation[3:] * row_spacing)

    def patient_points(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """LPS positions [N, 3] of (possibly fractional) pixel coordinates."""
        return (self.origin + np.outer(columns, self.column_step) + np.outer(rows, self.row_step))


@dataclass
class SourceSeries:
    """The headers of one DICOM series (no pixel data), ordered along the slice normal."""

    folder: Path
    datasets: list[Dataset]

    @property
    def first(self) -> Dataset:
        return self.datasets[0]

    def labels_on_frames(self, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """``labels`` (voxel array with its RAS ``affine``) as one frame per source slice: [slices, rows,
        columns], pixel for pixel with the source images."""
        to_voxel = np.linalg.inv(_LPS_FROM_RAS @ affine)
        frames = np.zeros((len(self.datasets), int(self.first.Rows), int(self.first.Columns)), dtype=labels.dtype)
        shape = np.array(labels.shape)
        for index, dataset in enumerate(self.datasets):
            geometry = FrameGeometry.of(dataset)
            start = to_voxel[:3, :3] @ geometry.origin + to_voxel[:3, 3]
            per_column = to_voxel[:3, :3] @ geometry.column_step  # voxel step of one column to the right
            per_row = to_voxel[:3, :3] @ geometry.row_step  # voxel step of one row down
            steps = np.stack([start, per_column, per_row])
            rows, columns = int(dataset.Rows), int(dataset.Columns)
            corners = [start + c * per_column + r * per_row for c in (0, columns - 1) for r in (0, rows - 1)]
            if np.abs(steps - np.round(steps)).max() > GRID_TOLERANCE or any(
                    (np.round(c) < 0).any() or (np.round(c) >= shape).any() for c in corners):
                raise MedsegError(f"{self.folder}: slice {index + 1} ({dataset.SOPInstanceUID}) does not lie on the "
                                  f"prediction's voxel grid; the prediction was not made from this series")
            start_i, column_i, row_i = (np.round(s).astype(np.int64)[:, None, None] for s in steps)
            grid = start_i + column_i * np.arange(columns)[None, None, :] + row_i * np.arange(rows)[None, :, None]
            frames[index] = labels[grid[0], grid[1], grid[2]]
        return frames


def _missing(dataset: Dataset) -> list[str]:
    return [name for name in REQUIRED if name not in dataset]


def read_source_series(folder: Path) -> SourceSeries:
    """The headers of the one series in ``folder`` (pixel data is not read), checked for what DICOM
    outputs need to reference it, and ordered along the slice normal."""
    files = choose_series(folder).files
    datasets: list[Dataset] = []
    for file in files:
        try:
            dataset = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as error:
            raise MedsegError(f"{file}: cannot read DICOM header ({error})") from None
        missing = _missing(dataset)
        if missing:
            raise MedsegError(f"{file}: DICOM outputs need {', '.join(missing)}, which this slice lacks")
        datasets.append(dataset)
    orientation = np.asarray(datasets[0].ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(orientation[:3], orientation[3:])
    datasets.sort(key=lambda d: float(np.asarray(d.ImagePositionPatient, dtype=np.float64) @ normal))
    for name in ("StudyInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        if len({str(d.get(name)) for d in datasets}) > 1:
            raise MedsegError(f"{folder}: the slices of one series differ in {name}")
    return SourceSeries(folder, datasets)
