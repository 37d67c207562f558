"""DICOM Segmentation (SEG) objects written with highdicom: one binary segment per class, each frame
referring to the source slice it was cut from, and each segment coded (``segment_codes``)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from medseg import __version__
from medseg.inference.dicom_source import SourceSeries
from medseg.inference.segment_codes import segment_concept
from medseg.io import atomic_output

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SERIES_NUMBER_OFFSET = 1000  # the SEG series is numbered after its source: 3 -> 1003


def segment_descriptions(class_names: list[str]) -> list[hd.seg.SegmentDescription]:
    """Segment k is class k (class 0, the background, is not a segment), so a label map's values are
    its segment numbers."""
    algorithm = hd.AlgorithmIdentificationSequence(name="medseg", version=__version__,
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for number, name in enumerate(class_names[1:], start=1):
        concept = segment_concept(name)
        description = hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=concept.category,
            segmented_property_type=concept.type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        if concept.laterality is not None:
            description.SegmentedPropertyTypeModifierCodeSequence = [hd.sr.CodedConcept.from_code(concept.laterality)]
        descriptions.append(description)
    return descriptions


def write_dicom_seg(path: Path, frames: np.ndarray, series: SourceSeries, class_names: list[str],
                    model_name: str) -> None:
    """Write ``frames`` (labels [slices, rows, columns], pixel for pixel with ``series``) as a binary SEG."""
    source = series.first
    number = int(source.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    segmentation = hd.seg.Segmentation(
        source_images=series.datasets,
        pixel_array=frames.astype(np.uint8, copy=False),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(class_names),
        series_instance_uid=hd.UID(), series_number=number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="medseg", manufacturer_model_name=model_name[:64], software_versions=__version__,
        device_serial_number="none", series_description=f"medseg {model_name}"[:64],
        omit_empty_frames=bool(frames.any()),  # an empty prediction still needs one frame
    )
    with atomic_output(path) as tmp:
        segmentation.save_as(tmp)
