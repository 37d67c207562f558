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


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def write_ct_series(folder: Path, frames: np.ndarray, orientation=(1, 0, 0, 0, 1, 0), pixel_spacing=(0.8, 1.1),
                    slice_spacing: float = 2.5, origin=(-30.0, -20.0, 40.0), reverse_files: bool = False,
                    slope: float = 1.0, intercept: float = 0.0, unsigned_bits: int | None = None) -> list:
    """A CT series as scanners write it (pydicom, one file per slice, every header a SEG or RTSTRUCT needs):
    ``frames`` [slices, rows, columns] are the stored pixels; slice k sits at ``origin + k * slice_spacing``
    along the normal of ``orientation``. Values are stored as ``(frames - intercept) / slope``, as signed
    16-bit or as unsigned ``unsigned_bits``-bit pixels. Returns the datasets in slice order."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    row_direction, column_direction = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_direction, column_direction)
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    written = []
    for k, pixels in enumerate(frames):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Test", "P001", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.Manufacturer = "", "test"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        position = np.array(origin) + k * slice_spacing * normal
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.PixelSpacing = [str(s) for s in pixel_spacing]
        ds.SliceThickness = str(slice_spacing)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        bits = unsigned_bits or 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(not unsigned_bits)
        ds.RescaleIntercept, ds.RescaleSlope = f"{intercept:g}", f"{slope:g}"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        stored = np.round((pixels - intercept) / slope).astype(np.uint16 if unsigned_bits else np.int16)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        index = len(frames) - 1 - k if reverse_files else k  # file order need not be slice order
        ds.save_as(folder / f"IM{index:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written
