"""DICOM SEG and RT Structure Set outputs land where the prediction is.

The oracle for geometry is not our own code: the series is read by SimpleITK (as ``medseg infer`` reads
it) into the NIfTI-style grid a prediction lives on, the SEG is read back with highdicom (its own
volume geometry) and the structure set with pydicom (contour points in patient space). For each
segment, the centroid from the written object and from the NIfTI grid must agree within half a voxel,
on axial, feet-first, negated-cosine and oblique series with non-square pixels, so a mirrored or
transposed axis cannot pass.
"""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.dicom_seg import write_dicom_seg
from medseg.inference.dicom_source import read_source_series
from medseg.inference.rtstruct import slice_contours, write_rtstruct
from medseg.inference.segment_codes import PRIVATE_SCHEME, segment_concept
from medseg.io import read_volume
from tests.helpers import write_ct_series


def _rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    z, x = np.radians(z_degrees), np.radians(x_degrees)
    around_z = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    around_x = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return around_x @ around_z


OBLIQUE = tuple(np.concatenate([_rotation(20, 15)[:, 0], _rotation(20, 15)[:, 1]]))
ORIENTATIONS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "feet_first": (-1, 0, 0, 0, 1, 0),
    "negated_cosines": (-1, 0, 0, 0, -1, 0),
    "oblique": OBLIQUE,
}
CLASSES = ["background", "LeftParotid", "Mandible"]


def _phantom_labels() -> np.ndarray:
    """Two asymmetric objects, so that any flip or transposition moves a centroid by many voxels."""
    frames = np.zeros((12, 20, 26), np.int16)
    rows, columns = np.mgrid[:20, :26]
    ellipse = ((rows - 6) / 3.5) ** 2 + ((columns - 7) / 5.0) ** 2 <= 1
    frames[2:6][:, ellipse] = 1
    frames[7:11, 12:18, 15:24] = 2
    return frames


def _nifti_centroid(volume, label: int) -> np.ndarray:
    voxels = np.argwhere(volume.array == label)
    ras = volume.affine[:3, :3] @ voxels.mean(axis=0) + volume.affine[:3, 3]
    return ras * np.array([-1, -1, 1])  # LPS, as DICOM


def _seg_centroid(path, label: int) -> np.ndarray:
    volume = hd.seg.segread(path).get_volume(combine_segments=True)
    voxels = np.argwhere(volume.array == label)
    return volume.affine[:3, :3] @ voxels.mean(axis=0) + volume.affine[:3, 3]


def _polygon_area_centroid(points: np.ndarray) -> tuple[float, np.ndarray]:
    """Area and centroid of a planar polygon in 3D (fan of triangles from its first point)."""
    normal = np.cross(points[1] - points[0], points[2] - points[0])
    for i in range(2, len(points) - 1):  # a robust normal: the largest fan cross product
        candidate = np.cross(points[i] - points[0], points[i + 1] - points[0])
        normal = candidate if np.linalg.norm(candidate) > np.linalg.norm(normal) else normal
    normal /= np.linalg.norm(normal)
    total, weighted = 0.0, np.zeros(3)
    for i in range(1, len(points) - 1):
        area = 0.5 * float(normal @ np.cross(points[i] - points[0], points[i + 1] - points[0]))
        total += area
        weighted += area * (points[0] + points[i] + points[i + 1]) / 3
    return abs(total), weighted / total


def _rtstruct_centroid(path, name: str) -> np.ndarray:
    structure_set = pydicom.dcmread(path)
    number = next(r.ROINumber for r in structure_set.StructureSetROISequence if r.ROIName == name)
    roi = next(r for r in structure_set.ROIContourSequence if r.ReferencedROINumber == number)
    areas, centroids = [], []
    for contour in roi.ContourSequence:
        area, centroid = _polygon_area_centroid(np.asarray(contour.ContourData, dtype=float).reshape(-1, 3))
        areas.append(area)
        centroids.append(centroid)
    return np.average(centroids, axis=0, weights=areas)


def _voxel_offset(volume, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in voxels of ``volume`` along each of its axes."""
    lps_from_voxel = np.diag([-1, -1, 1]) @ volume.affine[:3, :3]
    return np.abs(np.linalg.solve(lps_from_voxel, a - b))


@pytest.mark.parametrize("orientation", list(ORIENTATIONS), ids=list(ORIENTATIONS))
def test_seg_and_rtstruct_centroids_match_the_nifti_grid(orientation, tmp_path):
    frames = _phantom_labels()
    # Stored pixels are the labels: SimpleITK's reading of them is the prediction on medseg's grid.
    write_ct_series(tmp_path / "ct", frames, orientation=ORIENTATIONS[orientation], reverse_files=True)
    volume = read_volume(tmp_path / "ct")
    series = read_source_series(tmp_path / "ct")
    on_frames = series.labels_on_frames(volume.array.astype(np.uint8), volume.affine)
    np.testing.assert_array_equal(on_frames, frames)  # pixel for pixel with the source slices
    write_dicom_seg(tmp_path / "seg.dcm", on_frames, series, CLASSES, "tiny")
    write_rtstruct(tmp_path / "rt.dcm", on_frames, series, CLASSES, "tiny")
    for label, name in enumerate(CLASSES[1:], start=1):
        expected = _nifti_centroid(volume, label)
        seg_offset = _voxel_offset(volume, _seg_centroid(tmp_path / "seg.dcm", label), expected)
        rt_offset = _voxel_offset(volume, _rtstruct_centroid(tmp_path / "rt.dcm", name), expected)
        assert seg_offset.max() < 0.5, (name, seg_offset)
        assert rt_offset.max() < 0.5, (name, rt_offset)


def test_seg_segments_are_coded_and_refer_to_the_source_slices(tmp_path):
    written = write_ct_series(tmp_path / "ct", _phantom_labels())
    volume = read_volume(tmp_path / "ct")
    series = read_source_series(tmp_path / "ct")
    write_dicom_seg(tmp_path / "seg.dcm", series.labels_on_frames(volume.array.astype(np.uint8), volume.affine),
                    series, CLASSES, "tiny")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["LeftParotid", "Mandible"]
    parotid = seg.SegmentSequence[0]
    assert parotid.SegmentedPropertyTypeCodeSequence[0].CodeValue == "45289007"  # SNOMED CT parotid gland
    assert parotid.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    assert seg.StudyInstanceUID == written[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == written[0].FrameOfReferenceUID
    sources = {d.SOPInstanceUID for d in written}
    referenced = {item.ReferencedSOPInstanceUID for frame in seg.PerFrameFunctionalGroupsSequence
                  for item in frame.DerivationImageSequence[0].SourceImageSequence}
    assert referenced and referenced <= sources


def test_rtstruct_is_a_valid_structure_set(tmp_path):
    written = write_ct_series(tmp_path / "ct", _phantom_labels())
    volume = read_volume(tmp_path / "ct")
    series = read_source_series(tmp_path / "ct")
    write_rtstruct(tmp_path / "rt.dcm", series.labels_on_frames(volume.array.astype(np.uint8), volume.affine),
                   series, CLASSES + ["Absent"], "tiny")
    rt = pydicom.dcmread(tmp_path / "rt.dcm")
    assert rt.Modality == "RTSTRUCT" and rt.PatientID == "P001"
    assert [r.ROIName for r in rt.StructureSetROISequence] == ["LeftParotid", "Mandible", "Absent"]
    assert "ContourSequence" in rt.ROIContourSequence[0] and len(rt.ROIContourSequence[2].ContourSequence) == 0
    codes = [o.RTROIIdentificationCodeSequence[0] for o in rt.RTROIObservationsSequence]
    assert codes[1].CodeValue == "91609006" and codes[2].CodingSchemeDesignator == PRIVATE_SCHEME
    sources = {d.SOPInstanceUID for d in written}
    for contour in rt.ROIContourSequence[0].ContourSequence:
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in sources
        assert len(contour.ContourData) == 3 * contour.NumberOfContourPoints


def test_contour_area_matches_the_pixel_count():
    mask = np.zeros((30, 30), bool)
    mask[5:20, 8:25] = True
    mask[10:14, 12:16] = False  # a hole: a second, inner contour
    contours = slice_contours(mask)
    assert len(contours) == 2

    def area(points):
        rows, columns = points[:, 0], points[:, 1]
        return 0.5 * abs(np.dot(rows, np.roll(columns, 1)) - np.dot(columns, np.roll(rows, 1)))

    outer, inner = sorted((area(c) for c in contours), reverse=True)
    # Marching squares cuts 1/8 pixel at each of the 8 corners: within one pixel of the count.
    assert abs((outer - inner) - mask.sum()) <= 8 * 0.125 + 1e-6


@pytest.mark.parametrize("name, meaning, laterality", [
    ("SpinalCord", "Spinal cord", None), ("spinal_cord", "Spinal cord", None),
    ("RightParotid", "Parotid gland", "Right"), ("Parotid_L", "Parotid gland", "Left"),
    ("kidney_left", "Kidney", "Left"), ("liver", "Liver", None),
])
def test_class_names_find_their_snomed_concept(name, meaning, laterality):
    concept = segment_concept(name)
    assert concept.type.meaning == meaning and concept.is_standard
    assert (concept.laterality.meaning if concept.laterality else None) == laterality


def test_unknown_class_names_keep_their_name_under_a_private_scheme():
    concept = segment_concept("Anterior")  # a direction, not an anatomical structure: no false code
    assert not concept.is_standard and concept.type.meaning == "Anterior"
    assert segment_concept("Lesion").category.meaning == "Morphologically Abnormal Structure"


def test_a_prediction_from_another_grid_is_refused(tmp_path):
    write_ct_series(tmp_path / "ct", _phantom_labels())
    series = read_source_series(tmp_path / "ct")
    volume = read_volume(tmp_path / "ct")
    shifted = volume.affine.copy()
    shifted[:3, 3] += 0.4 * volume.affine[:3, 0]  # 0.4 voxel off: not the series' grid
    with pytest.raises(MedsegError, match="does not lie on the prediction's voxel grid"):
        series.labels_on_frames(volume.array.astype(np.uint8), shifted)


def _infer(run, source, out, *extra):
    return main(["infer", "--model", str(run), "-i", str(source), "-o", str(out), "--device", "cpu", "--no-progress",
                 *extra])


def test_infer_writes_seg_and_rtstruct_that_agree_with_its_nifti(tiny_run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    frames = (rng.normal(0, 40, (10, 40, 36)) - 100).astype(np.int16)
    frames[3:8, 10:30, 8:28] += 300  # a bright block, as the phantoms' organs are
    write_ct_series(tmp_path / "scan", frames, orientation=ORIENTATIONS["feet_first"], pixel_spacing=(1.5, 1.5),
                    slice_spacing=3.0)
    assert _infer(tiny_run, tmp_path / "scan", tmp_path / "nifti") == 0
    assert _infer(tiny_run, tmp_path / "scan", tmp_path / "seg", "--output-format", "dicom-seg") == 0
    assert _infer(tiny_run, tmp_path / "scan", tmp_path / "rt", "--output-format", "rtstruct") == 0
    labels = nib.load(tmp_path / "nifti" / "scan.nii.gz")
    series = read_source_series(tmp_path / "scan")
    expected = series.labels_on_frames(np.asarray(labels.dataobj).astype(np.uint8), labels.affine)
    seg = hd.seg.segread(tmp_path / "seg" / "scan_seg.dcm")
    class_names = [d.SegmentLabel for d in seg.SegmentSequence]
    volume = seg.get_volume(combine_segments=True)
    for label in range(1, len(class_names) + 1):
        assert (volume.array == label).sum() == (expected == label).sum()
    rt = pydicom.dcmread(tmp_path / "rt" / "scan_rtstruct.dcm")
    assert [r.ROIName for r in rt.StructureSetROISequence] == class_names
    # --continue recognises a complete DICOM output and keeps it.
    assert _infer(tiny_run, tmp_path / "scan", tmp_path / "seg", "--output-format", "dicom-seg", "--continue") == 0
    assert "0 written, 1 skipped" in capsys.readouterr().out


def test_dicom_output_for_a_nifti_input_is_refused_before_anything_is_written(tiny_run, phantom_dir, tmp_path, capsys):
    image = sorted((phantom_dir / "imagesTr").iterdir())[0]
    assert _infer(tiny_run, image, tmp_path / "out", "--output-format", "rtstruct") == 2
    err = capsys.readouterr().err.strip()
    assert "needs DICOM series as input" in err and image.name in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
