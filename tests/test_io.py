import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import MedsegError
from medseg.io import atomic_output, case_id, read_header, read_volume, write_volume
from tests.helpers import oblique_affine, write_dicom_series, write_nifti


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_array_and_oblique_affine(tmp_path, suffix):
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = oblique_affine()
    path = tmp_path / f"case{suffix}"
    write_volume(path, array, affine)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    shape, header_affine = read_header(path)
    assert shape == (4, 5, 6)
    np.testing.assert_allclose(header_affine, affine, atol=1e-5)


def test_nifti_reference_header_keeps_affine_bit_for_bit(tmp_path):
    source = write_nifti(tmp_path / "in.nii.gz", np.zeros((3, 4, 5), np.float32), oblique_affine())
    original = nib.load(str(source))
    write_volume(tmp_path / "out.nii.gz", np.ones((3, 4, 5), np.uint8), original.affine, original.header)
    written = nib.load(str(tmp_path / "out.nii.gz"))
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(written.affine, original.affine)


def test_sitk_orientation_matches_nibabel(tmp_path):
    """The same image through SimpleITK (LPS) and nibabel (RAS) gives the same RAS affine and array."""
    array = np.random.default_rng(0).integers(0, 100, (6, 7, 8)).astype(np.int16)
    write_nifti(tmp_path / "a.nii.gz", array, oblique_affine())
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "a.nii.gz")), str(tmp_path / "a.mha"))
    a, b = read_volume(tmp_path / "a.nii.gz"), read_volume(tmp_path / "a.mha")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)


def test_bad_files_give_one_line_errors_naming_the_file(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", np.zeros((20, 20, 20), np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.nii.gz"
    text.write_bytes(gzip.compress(b"not an image"))
    flat = write_nifti(tmp_path / "flat.nii.gz", np.zeros((20, 20), np.float32))
    series = write_nifti(tmp_path / "series.nii.gz", np.zeros((8, 8, 8, 3), np.float32))
    cases = {truncated: "cannot read", text: "cannot read", flat: "expected a 3D image, got 2D",
             series: "expected a 3D image, got 4D", tmp_path / "missing.nii.gz": "no such file"}
    for path, problem in cases.items():
        with pytest.raises(MedsegError) as info:
            read_volume(path)
        message = str(info.value)
        assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_trailing_singleton_axis_is_accepted(tmp_path):
    path = write_nifti(tmp_path / "x.nii.gz", np.zeros((4, 5, 6, 1), np.float32))
    assert read_volume(path).array.shape == (4, 5, 6)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_case_id_drops_only_the_channel_suffix(tmp_path):
    assert case_id(tmp_path / "kbp_001_0000.nii.gz") == "kbp_001"
    assert case_id(tmp_path / "amos_0001.nii.gz") == "amos_0001"
    assert case_id(tmp_path / "scan.mha") == "scan"


def test_dicom_series_folder_reads_with_geometry(tmp_path):
    array = np.random.default_rng(0).integers(-1000, 1000, (12, 10, 6)).astype(np.int16)
    write_dicom_series(tmp_path / "series", array, (0.7, 0.7, 2.5), (-50.0, 20.0, 100.0))
    volume = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.7, 0.7, 2.5), atol=1e-4)
    # LPS origin (-50, 20, 100) is RAS (50, -20, 100)
    np.testing.assert_allclose(volume.affine[:3, 3], (50.0, -20.0, 100.0), atol=1e-4)
    assert read_header(tmp_path / "series")[0] == (12, 10, 6)
