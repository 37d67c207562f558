"""DICOM series as inputs: which series a folder holds, one chosen by UID, and the geometry checks that
catch what a volume reader would silently get wrong.

A series whose slices are not evenly spaced along their normal (missing slices, mixed thicknesses), or
whose slices are sheared against their normal (gantry tilt), is not a regular grid: read as one, every
organ would be displaced. Both are refused with a clear message rather than predicted in the wrong place.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medseg.errors import MedsegError

POSITION, ORIENTATION = "0020|0032", "0020|0037"
SLOPE, INTERCEPT, BITS_STORED, SIGNED = "0028|1053", "0028|1052", "0028|0101", "0028|0103"
SERIES_TAGS = {"modality": "0008|0060", "description": "0008|103e"}
SPACING_TOLERANCE = 0.01  # relative: slice gaps may differ by 1% (rounding in positions)
TILT_TOLERANCE_DEGREES = 0.5


@dataclass
class SeriesInfo:
    uid: str
    files: list[str]
    modality: str
    description: str

    def line(self) -> str:
        what = " ".join(p for p in (self.modality, f"'{self.description}'" if self.description else "") if p)
        return f"{self.uid} ({len(self.files)} files{', ' + what if what else ''})"


def _tag(reader: sitk.ImageFileReader, tag: str) -> str:
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else ""


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    reader.ReadImageInformation()
    return reader


def _give_back_freed_memory() -> None:
    """Return freed heap memory to the system (glibc only). GDCM reads every file of a folder whole
    to group and order its series, and frees the lot, but glibc keeps it: 830 MB for a
    512x512x1600 series, which the scan's own voxels, allocated afterwards, would come on top of."""
    library = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(library), "malloc_trim", None) if library else None
    if trim is not None:
        trim(0)


def series_in(folder: Path) -> list[SeriesInfo]:
    """The DICOM series directly in ``folder`` (GDCM's grouping and slice order)."""
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        first = _header(files[0])
        found.append(SeriesInfo(uid, files, _tag(first, SERIES_TAGS["modality"]),
                                _tag(first, SERIES_TAGS["description"])))
    _give_back_freed_memory()
    return found


def choose_series(folder: Path, uid: str | None = None) -> SeriesInfo:
    """The one series of ``folder``, or the series ``uid`` among several; the error lists what was found."""
    found = series_in(folder)
    if not found:
        raise MedsegError(f"{folder}: folder holds no DICOM series")
    listing = "; ".join(s.line() for s in found)
    if uid is not None:
        for series in found:
            if series.uid == uid:
                return series
        raise MedsegError(f"{folder}: no DICOM series {uid}; found {listing}")
    if len(found) > 1:
        raise MedsegError(f"{folder}: folder holds {len(found)} DICOM series: {listing}; choose one with --series UID")
    return found[0]


def _vector(reader: sitk.ImageFileReader, tag: str, length: int, path: str) -> np.ndarray:
    text = _tag(reader, tag)
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=np.float64)
    except ValueError:
        values = np.zeros(0)
    if values.shape != (length,):
        raise MedsegError(f"{path}: DICOM tag {tag} should hold {length} numbers, got '{text}'")
    return values


def check_series_geometry(folder: Path, files: list[str],
                          headers: list[sitk.ImageFileReader] | None = None) -> None:
    """Refuse a series that is not a regular grid: gantry tilt, or uneven spacing between slices."""
    if len(files) < 2:
        return
    headers = headers or [_header(f) for f in files]
    orientation = _vector(headers[0], ORIENTATION, 6, files[0])
    normal = np.cross(orientation[:3], orientation[3:])
    normal /= np.linalg.norm(normal)
    positions = np.stack([_vector(h, POSITION, 3, f) for h, f in zip(headers, files)])
    along = positions @ normal
    order = np.argsort(along)
    along, positions = along[order], positions[order]
    steps = np.diff(along)
    if (steps <= 1e-6).any():
        raise MedsegError(f"{folder}: {int((steps <= 1e-6).sum()) + 1} slices share one position; "
                          "the folder mixes several acquisitions")
    travel = positions[-1] - positions[0]
    cosine = float(abs(travel @ normal) / np.linalg.norm(travel))
    tilt = float(np.degrees(np.arccos(min(cosine, 1.0))))
    if tilt > TILT_TOLERANCE_DEGREES:
        raise MedsegError(f"{folder}: gantry tilt of {tilt:.1f} degrees (slices are sheared against their normal); "
                          "resample the series to an orthogonal grid first")
    if steps.max() - steps.min() > SPACING_TOLERANCE * steps.mean():
        raise MedsegError(f"{folder}: non-uniform slice spacing ({steps.min():.2f} to {steps.max():.2f} mm between "
                          f"slices: missing slices or mixed thicknesses); the series is not a regular grid")


def _number(reader: sitk.ImageFileReader, tag: str, default: float) -> float:
    try:
        return float(_tag(reader, tag) or default)
    except ValueError:
        return float("nan")


def lossless_integer_type(headers: list[sitk.ImageFileReader]) -> int | None:
    """The smallest SimpleITK integer type that holds every rescaled value of the series exactly, or None
    when a slope is not 1 or an intercept not whole (those values need floats). GDCM reads a CT series
    with an intercept as float64 otherwise: four times the memory of the int16 Hounsfield units it holds."""
    low, high = np.inf, -np.inf
    for header in headers:
        slope, intercept = _number(header, SLOPE, 1.0), _number(header, INTERCEPT, 0.0)
        bits = int(_number(header, BITS_STORED, 16))
        if slope != 1.0 or intercept != round(intercept) or not 1 <= bits <= 16:
            return None
        signed = _tag(header, SIGNED) == "1"
        stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        low, high = min(low, stored[0] + intercept), max(high, stored[1] + intercept)
    return sitk.sitkInt16 if low >= -(2**15) and high < 2**15 else sitk.sitkInt32


SLICES_AT_A_TIME = 64  # a series is read in runs of this many files into the one output array


def read_series(folder: Path, uid: str | None = None,
                slices_at_a_time: int = SLICES_AT_A_TIME) -> tuple[np.ndarray, sitk.Image]:
    """The chosen series of ``folder``, after the geometry checks, as voxels in (x, y, z) order, in the
    smallest type that holds its values exactly, and an image with the series' origin, spacing and
    direction. Read a run of slices at a time into one array: reading a whole series at once holds it
    twice over (GDCM's buffers, then the copy out of SimpleITK), 3.4 GB for a 512x512x1600 CT."""
    series = choose_series(folder, uid)
    files = series.files
    headers = [_header(f) for f in files]
    check_series_geometry(folder, files, headers)
    pixel_type = lossless_integer_type(headers)
    slices_at_a_time = max(slices_at_a_time, 2)  # SimpleITK takes the slice spacing from a run's first two
    starts = list(range(0, len(files), slices_at_a_time))
    if len(starts) > 1 and len(files) - starts[-1] < 2:  # so every run but a one-slice series has two
        starts[-1] -= 1
    array: np.ndarray | None = None
    geometry: sitk.Image | None = None
    for start in starts:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files[start : start + slices_at_a_time])
        reader.SetOutputPixelType(pixel_type if pixel_type is not None else sitk.sitkFloat32)
        image = reader.Execute()
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise MedsegError(f"{folder}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} "
                              "components (a colour series?)")
        voxels = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)  # [z, y, x] -> [x, y, z]
        if array is None:
            array = np.empty((*voxels.shape[:2], len(files)), dtype=voxels.dtype)
            geometry = image
        array[:, :, start : start + voxels.shape[2]] = voxels
    assert array is not None and geometry is not None  # a chosen series has at least one file
    return array, geometry


_TEMPORARY: list[Path] = []  # folders made for this process's inputs, removed when it exits


def _remove_temporary() -> None:
    for folder in _TEMPORARY:
        shutil.rmtree(folder, ignore_errors=True)


def _temporary_folder(name: str) -> Path:
    if not _TEMPORARY:
        atexit.register(_remove_temporary)
    parent = Path(tempfile.mkdtemp(prefix="medseg-input-"))
    _TEMPORARY.append(parent)
    folder = parent / name
    folder.mkdir()
    return folder


def extracted_zip(path: Path) -> Path:
    """A ``.zip`` of images or DICOM series, extracted into a temporary folder named after the archive
    (removed at exit), so that a zipped single series keeps the archive's name as its case name."""
    try:
        with zipfile.ZipFile(path) as archive:
            folder = _temporary_folder(path.name[: -len(".zip")])
            archive.extractall(folder)  # member names are sanitised: nothing lands outside ``folder``
    except zipfile.BadZipFile as error:
        raise MedsegError(f"{path}: not a readable zip archive ({error})") from None
    return folder


def series_folder(folder: Path, uid: str) -> Path:
    """A temporary folder holding only series ``uid`` of ``folder`` (links to its files), named like
    ``folder``, so that it reads and is named like a folder holding that one series."""
    series = choose_series(folder, uid)
    selected = _temporary_folder(folder.name)
    for index, file in enumerate(series.files):
        (selected / f"{index:05d}_{Path(file).name}").symlink_to(Path(file).resolve())
    return selected
