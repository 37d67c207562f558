"""RT Structure Sets: one ROI per class, drawn as closed planar contours on the source slices.

highdicom does not write structure sets, and rt-utils mixes up row and column spacing and rounds
positions to float32, so the object is built with pydicom here. Contours are scikit-image's marching
squares at the 0.5 level of each class mask on each slice (pixel-edge midpoints, so the enclosed area
matches the voxel count), placed in patient space with the slice's own position, orientation and
spacing. A hole is a second contour inside the first: readers combine the contours of one slice by
the even-odd rule, as the standard's CLOSED_PLANAR contours are read in practice.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from skimage.measure import find_contours

from medseg import __version__
from medseg.inference.dicom_seg import SERIES_NUMBER_OFFSET
from medseg.inference.dicom_source import FrameGeometry, SourceSeries
from medseg.inference.segment_codes import segment_concept
from medseg.io import atomic_output

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # what RT Referenced Study items conventionally cite
PATIENT_AND_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                     "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours [N, 2] (row, column; fractional) around the pixels of a 2D boolean mask; the
    last point is not repeated. Padding closes contours that touch the image border."""
    padded = np.pad(mask.astype(np.float32), 1)
    contours = []
    for contour in find_contours(padded, 0.5):
        points = contour[:-1] - 1.0 if np.allclose(contour[0], contour[-1]) else contour - 1.0
        if len(points) >= 3:
            contours.append(points)
    return contours


def _reference(dataset: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    return item


def _code_item(code: object) -> Dataset:
    return hd.sr.CodedConcept.from_code(code)  # type: ignore[arg-type]


def _header(series: SourceSeries, model_name: str) -> Dataset:
    source = series.first
    now = datetime.datetime.now()
    ds = Dataset()
    for name in PATIENT_AND_STUDY:
        setattr(ds, name, source.get(name, ""))
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = hd.UID()
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = hd.UID()
    ds.SeriesNumber = int(source.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    ds.SeriesDescription = f"medseg {model_name}"[:64]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.Manufacturer = "medseg"
    ds.ManufacturerModelName = model_name[:64]
    ds.SoftwareVersions = __version__
    ds.OperatorsName = ""
    ds.StructureSetLabel = "medseg"
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    series_item = Dataset()
    series_item.SeriesInstanceUID = source.SeriesInstanceUID
    series_item.ContourImageSequence = Sequence([_reference(d) for d in series.datasets])
    study_item = Dataset()
    study_item.ReferencedSOPClassUID = STUDY_COMPONENT_SOP_CLASS
    study_item.ReferencedSOPInstanceUID = source.StudyInstanceUID
    study_item.RTReferencedSeriesSequence = Sequence([series_item])
    frame_item = Dataset()
    frame_item.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame_item.RTReferencedStudySequence = Sequence([study_item])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame_item])
    return ds


def _roi(number: int, name: str, frames: np.ndarray, series: SourceSeries) -> tuple[Dataset, Dataset, Dataset]:
    """The three items of one ROI: its name, its contours and its observation (with the coded concept)."""
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = series.first.FrameOfReferenceUID
    roi.ROIName = name[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    contours = Sequence()
    for index in np.flatnonzero((frames == number).any(axis=(1, 2))):
        dataset = series.datasets[index]
        geometry = FrameGeometry.of(dataset)
        for points in slice_contours(frames[index] == number):
            contour = Dataset()
            contour.ContourImageSequence = Sequence([_reference(dataset)])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            patient = geometry.patient_points(points[:, 0], points[:, 1])
            contour.ContourData = [f"{v:.3f}" for v in patient.ravel()]
            contours.append(contour)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = number
    roi_contour.ROIDisplayColor = list(COLOURS[(number - 1) % len(COLOURS)])
    roi_contour.ContourSequence = contours
    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    concept = segment_concept(name)
    observation.RTROIIdentificationCodeSequence = Sequence([_code_item(concept.type)])
    return roi, roi_contour, observation


def write_rtstruct(path: Path, frames: np.ndarray, series: SourceSeries, class_names: list[str],
                   model_name: str) -> None:
    """Write ``frames`` (labels [slices, rows, columns], pixel for pixel with ``series``) as an RT
    Structure Set with one ROI per class (an ROI the prediction does not contain has no contours)."""
    ds = _header(series, model_name)
    items = [_roi(number, name, frames, series) for number, name in enumerate(class_names[1:], start=1)]
    ds.StructureSetROISequence = Sequence([roi for roi, _, _ in items])
    ds.ROIContourSequence = Sequence([contour for _, contour, _ in items])
    ds.RTROIObservationsSequence = Sequence([observation for _, _, observation in items])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    with atomic_output(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
