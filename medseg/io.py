"""Reading and writing volumes with their geometry, and atomic file output.

NIfTI goes through nibabel so that the header (and therefore the affine) of an input can be copied to
its prediction bit for bit; NRRD, MHA/MHD and DICOM series go through SimpleITK. Every reader returns
the voxel array in (i, j, k) order and a 4x4 RAS affine, the convention MONAI uses.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from medseg.dicom import read_series
from medseg.errors import MedsegError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_CHANNEL_SUFFIX = "_0000"


@dataclass
class Volume:
    """A 3D voxel array with its RAS affine; ``header`` is the NIfTI header when read from NIfTI."""

    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z


def is_image_path(path: Path) -> bool:
    """True for a file with a supported image suffix, or a folder holding a DICOM series."""
    if path.is_dir():
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def image_stem(path: Path) -> str:
    """File name without its image suffix (``case_001.nii.gz`` -> ``case_001``)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id(path: Path) -> str:
    """Case name of an image: its stem without the nnU-Net channel suffix of the single channel medseg
    reads (``case_001_0000.nii.gz`` -> ``case_001``); other ``_NNNN`` endings are part of the name."""
    stem = image_stem(path)
    return stem[: -len(_CHANNEL_SUFFIX)] if stem.endswith(_CHANNEL_SUFFIX) else stem


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _sitk_affine(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """RAS affine from SimpleITK's LPS direction, spacing and origin (3D only)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ affine


def _require_3d(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    # Trailing singleton axes (x, y, z, 1) are common in NIfTI exports and harmless.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise MedsegError(f"{path}: expected a 3D image, got {len(shape)}D with shape {tuple(shape)}")
    if min(shape) < 1:
        raise MedsegError(f"{path}: image is empty (shape {tuple(shape)})")
    return shape[0], shape[1], shape[2]


def _load_nifti(path: Path) -> nib.Nifti1Pair:
    """A NIfTI-1 or NIfTI-2 image (header and a proxy of the voxels; the voxels themselves are read lazily)."""
    image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Pair):  # Nifti1Image and Nifti2Image both derive from it
        raise MedsegError(f"{path}: not a NIfTI image (nibabel read it as {type(image).__name__})")
    return image


@contextlib.contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn reader failures (nibabel and SimpleITK raise many types for corrupt files) into one line."""
    if not path.exists():
        raise MedsegError(f"{path}: no such file or folder")
    try:
        yield
    except MedsegError:
        raise
    except Exception as exc:
        raise MedsegError(f"{path}: cannot read {what} ({_short(exc)})") from None


def read_header(path: str | os.PathLike) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine without reading the voxels (cheap checks over a whole dataset)."""
    path = Path(path)
    with _reading(path, "image header"):
        if _is_nifti(path):
            nifti = _load_nifti(path)
            shape, affine = tuple(int(s) for s in nifti.shape), np.asarray(nifti.affine, dtype=np.float64)
        elif path.is_dir():  # a series' geometry needs its slices' positions: read it
            array, geometry = read_series(path)
            shape, affine = tuple(int(s) for s in array.shape), _sitk_affine(geometry)
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            shape = tuple(int(s) for s in reader.GetSize())
            if reader.GetNumberOfComponents() != 1:
                raise MedsegError(
                    f"{path}: expected one value per voxel, got {reader.GetNumberOfComponents()} components"
                )
            affine = _sitk_affine(reader) if len(shape) == 3 else np.eye(4)
    return _require_3d(path, shape), affine


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3D image (NIfTI, NRRD, MHA/MHD or a DICOM series folder) with its geometry."""
    path = Path(path)
    with _reading(path, "image"):
        if _is_nifti(path):
            nifti = _load_nifti(path)
            array = np.asanyarray(nifti.dataobj)
            header: nib.Nifti1Header | None = nifti.header
            affine = np.asarray(nifti.affine, dtype=np.float64)
        elif path.is_dir():  # one series per folder, checked for gantry tilt and uneven spacing
            array, geometry = read_series(path)
            header, affine = None, _sitk_affine(geometry)
        else:
            image = sitk.ReadImage(str(path))
            if image.GetNumberOfComponentsPerPixel() != 1:
                raise MedsegError(
                    f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} components"
                )
            header, affine = None, _sitk_affine(image) if image.GetDimension() == 3 else np.eye(4)
            # One copy, from a view of SimpleITK's buffer straight into x, y, z order.
            array = np.array(sitk.GetArrayViewFromImage(image).transpose(*reversed(range(image.GetDimension()))),
                             order="C")
    shape = _require_3d(path, tuple(array.shape))
    array = array.reshape(shape)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsegError(f"{path}: image geometry is invalid (singular or non-finite affine)")
    return Volume(np.ascontiguousarray(array), affine, header)


def _short(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    The temporary name keeps the final suffix, so writers that pick a format from the name still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_volume(
    path: str | os.PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    reference_header: nib.Nifti1Header | None = None,
) -> None:
    """Write a 3D array atomically. With a NIfTI ``reference_header`` the output keeps that header's
    qform/sform exactly (only the data type changes), so the affine matches the input bit for bit."""
    path = Path(path)
    with atomic_output(path) as tmp:
        if _is_nifti(path):
            if reference_header is not None:
                header = reference_header.copy()
                header.set_data_dtype(array.dtype)
                header.set_slope_inter(1.0, 0.0)
                header["cal_min"], header["cal_max"] = 0, 0
                image = nib.Nifti1Image(array, None, header=header)
            else:
                image = nib.Nifti1Image(array, affine)
                image.header.set_qform(affine, code=1)
                image.header.set_sform(affine, code=1)
            nib.save(image, str(tmp))
        else:
            itk_image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
            lps = _LPS_TO_RAS @ affine
            spacing = np.linalg.norm(lps[:3, :3], axis=0)
            itk_image.SetSpacing(spacing.tolist())
            itk_image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
            itk_image.SetOrigin(lps[:3, 3].tolist())
            sitk.WriteImage(itk_image, str(tmp), useCompression=True)
