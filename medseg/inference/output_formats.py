"""What ``medseg infer`` writes for each case: a NIfTI label map (any input), or for a DICOM series a
DICOM SEG or an RT Structure Set that refers to the source slices."""

from __future__ import annotations

from pathlib import Path

import pydicom

from medseg.errors import MedsegError
from medseg.inference.dicom_seg import SEG_SOP_CLASS
from medseg.inference.rtstruct import RTSTRUCT_SOP_CLASS

OUTPUT_FORMATS = ("nifti", "dicom-seg", "rtstruct")
_SUFFIX = {"nifti": ".nii.gz", "dicom-seg": "_seg.dcm", "rtstruct": "_rtstruct.dcm"}
_SOP_CLASS = {"dicom-seg": SEG_SOP_CLASS, "rtstruct": RTSTRUCT_SOP_CLASS}


def output_name(case: str, output_format: str) -> str:
    """``case.nii.gz``, ``case_seg.dcm`` or ``case_rtstruct.dcm``."""
    return case + _SUFFIX[output_format]


def check_output_format(output_format: str, sources: list[Path]) -> None:
    """Refuse, before anything is predicted, a DICOM output for an input that is not a DICOM series."""
    if output_format not in OUTPUT_FORMATS:
        raise MedsegError(f"--output-format: expected one of {', '.join(OUTPUT_FORMATS)}, got '{output_format}'")
    if output_format == "nifti":
        return
    for source in sources:
        if not source.is_dir():
            raise MedsegError(f"{source}: --output-format {output_format} needs DICOM series as input "
                              "(its slices are referenced); write NIfTI for other images")


def dicom_output_is_complete(path: Path, output_format: str) -> bool:
    """Whether ``path`` is a readable DICOM object of the expected kind (outputs are written atomically)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False
    return str(dataset.get("SOPClassUID", "")) == _SOP_CLASS[output_format]
