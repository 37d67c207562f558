"""Shared test helpers: tiny settings, files written the way users and scanners write them, and the real
data when present."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tiny network and loop: every test trains in seconds on a CPU. TINY_COMMON holds the sections every
# training command reads; TINY adds those of 'medseg train' (strategies, inference).
TINY_COMMON = [
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "model.num_res_units=0",
    "data.spacing=[2.0,2.0,2.0]",
    "data.samples_per_volume=1",
    "train.max_epochs=1",
    "train.iterations_per_epoch=2",
    "train.batch_size=1",
    "train.progress=false",
    "train.final_validation=false",
]
TINY = [
    *TINY_COMMON,
    "patch.patch_size=[32,32,32]",
    "slice2d.patch_size=[32,32]",
    "infer.overlap=0.25",
]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data not present: {path}")
    return path


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def oblique_affine(spacing=(0.8, 1.3, 2.7), degrees: float = 20.0) -> np.ndarray:
    """An anisotropic, rotated (non-axis-aligned) affine with a non-zero origin."""
    t = np.radians(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(spacing)
    affine[:3, 3] = [-40.0, 12.5, 7.0]
    return affine


def write_dicom_series(folder, array, spacing, origin):
    """A CT series the way scanners store it: one file per slice with position and orientation tags."""
    folder.mkdir()
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1.1234567890"
    for k in range(array.shape[2]):
        piece = image[:, :, k]
        for tag, value in [("0008|0060", "CT"), ("0020|000e", series_uid), ("0020|000d", series_uid + ".1"),
                           ("0020|0013", str(k + 1)), ("0018|0050", str(spacing[2])),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"),
                           ("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))]:
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
