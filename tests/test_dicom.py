"""DICOM series as inputs: a folder of several series (choose with --series, told which were found), a
.zip of either, and series that are not a regular grid (gantry tilt, uneven spacing) refused clearly."""

import math
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.cli import main
from medseg.data.datasets import list_inputs
from tests.helpers import write_nifti

SPACING = (1.5, 1.5, 3.0)


def write_series(folder, uid, positions=None, shape=(24, 22, 8), orientation="1\\0\\0\\0\\1\\0", description="AX"):
    """One file per slice with its own position tag; ``positions`` replaces the regular ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(uid))
    array = (rng.normal(0, 50, shape) - 400).astype(np.int16)
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))
    image.SetSpacing(SPACING)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(shape[2]):
        position = positions[k] if positions is not None else (0.0, 0.0, k * SPACING[2])
        piece = image[:, :, k]
        for tag, value in [("0008|0060", "CT"), ("0020|000e", uid), ("0020|000d", uid + ".9"),
                           ("0008|103e", description), ("0020|0013", str(k + 1)), ("0018|0050", str(SPACING[2])),
                           ("0020|0037", orientation), ("0020|0032", "\\".join(f"{v:.4f}" for v in position)),
                           ("0008|0018", f"{uid}.{k + 1}")]:
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


def _infer(tiny_run, source, out, *extra):
    return main(["infer", "--model", str(tiny_run), "-i", str(source), "-o", str(out), "--device", "cpu",
                 "--no-progress", *extra])


def test_a_folder_of_two_series_names_them_and_predicts_the_chosen_one(tiny_run, tmp_path, capsys):
    scans = tmp_path / "patient7"
    write_series(scans, "1.2.3.100", description="AXIAL 3mm")
    write_series(scans, "1.2.3.200", shape=(24, 22, 6), description="LOCALIZER")
    assert _infer(tiny_run, scans, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "holds 2 DICOM series" in err and "1.2.3.100 (8 files, CT 'AXIAL 3mm')" in err
    assert "1.2.3.200 (6 files" in err and "--series UID" in err and len(err.strip().splitlines()) == 1
    assert _infer(tiny_run, scans, tmp_path / "out", "--series", "1.2.3.200") == 0
    assert nib.load(tmp_path / "out" / "patient7.nii.gz").shape == (24, 22, 6)
    assert _infer(tiny_run, scans, tmp_path / "o2", "--series", "9.9") == 2
    assert "no DICOM series 9.9; found 1.2.3.100" in capsys.readouterr().err


def test_zips_of_one_series_or_of_several_cases(tiny_run, tmp_path):
    series = write_series(tmp_path / "ct", "1.2.3.300")
    archive = tmp_path / "scan_a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in series.iterdir():
            z.write(file, file.name)
    assert _infer(tiny_run, archive, tmp_path / "out") == 0
    assert nib.load(tmp_path / "out" / "scan_a.nii.gz").shape == (24, 22, 8)
    cases = tmp_path / "cases.zip"
    with zipfile.ZipFile(cases, "w") as z:
        for name in ("one", "two"):
            image = write_nifti(tmp_path / f"{name}.nii.gz", np.full((20, 18, 10), -300, np.int16))
            z.write(image, f"cases/{name}.nii.gz")
    assert [p.name for p in list_inputs(cases)] == ["one.nii.gz", "two.nii.gz"]
    assert _infer(tiny_run, cases, tmp_path / "out2") == 0
    assert sorted(p.name for p in (tmp_path / "out2").glob("*.nii.gz")) == ["one.nii.gz", "two.nii.gz"]


def test_gantry_tilt_is_refused(tiny_run, tmp_path, capsys):
    shear = math.tan(math.radians(15.0)) * SPACING[2]
    positions = [(0.0, k * shear, k * SPACING[2]) for k in range(8)]
    tilted = write_series(tmp_path / "tilted", "1.2.3.400", positions=positions)
    assert _infer(tiny_run, tilted, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "gantry tilt of 15.0 degrees" in err and not (tmp_path / "out").exists()


def test_uneven_slice_spacing_and_duplicate_positions_are_refused(tiny_run, tmp_path, capsys):
    gap = [(0.0, 0.0, z) for z in (0, 3, 6, 9, 15, 18, 21, 24)]  # one slice missing
    assert _infer(tiny_run, write_series(tmp_path / "gap", "1.2.3.500", positions=gap), tmp_path / "o") == 2
    assert "non-uniform slice spacing (3.00 to 6.00 mm" in capsys.readouterr().err
    twice = [(0.0, 0.0, z) for z in (0, 3, 6, 6, 9, 12, 15, 18)]
    assert _infer(tiny_run, write_series(tmp_path / "twice", "1.2.3.600", positions=twice), tmp_path / "o") == 2
    assert "share one position" in capsys.readouterr().err


def test_a_regular_feet_first_series_reads(tmp_path):
    from medseg.io import read_volume

    down = write_series(tmp_path / "down", "1.2.3.700", positions=[(0.0, 0.0, -k * SPACING[2]) for k in range(8)])
    volume = read_volume(down)
    assert volume.array.shape == (24, 22, 8) and np.allclose(sorted(volume.spacing), sorted(SPACING))


def test_a_ct_series_is_read_in_the_integer_type_that_holds_its_hounsfield_units(tmp_path):
    """Scanners store CT as unsigned 12-bit pixels with an intercept of -1024: read as int16 (not the
    float64 GDCM would give, four times the memory), every value exact; a fractional slope stays float."""
    from medseg.io import read_volume
    from tests.helpers import write_ct_series

    hounsfield = np.random.default_rng(3).integers(-1024, 3000, (5, 12, 10)).astype(np.int16)
    write_ct_series(tmp_path / "ct", hounsfield, intercept=-1024, unsigned_bits=12)
    volume = read_volume(tmp_path / "ct")
    assert volume.array.dtype == np.int16 and volume.array.flags.c_contiguous
    np.testing.assert_array_equal(volume.array, hounsfield.transpose(2, 1, 0))  # [columns, rows, slices]
    write_ct_series(tmp_path / "scaled", hounsfield * 0.5, slope=0.5, intercept=-1024.0)
    scaled = read_volume(tmp_path / "scaled")
    assert scaled.array.dtype.kind == "f"
    np.testing.assert_allclose(scaled.array, hounsfield.transpose(2, 1, 0) * 0.5)


@pytest.mark.parametrize("orientation, reverse_files", [((1, 0, 0, 0, 1, 0), False), ((-1, 0, 0, 0, 1, 0), True)])
def test_a_series_read_a_few_slices_at_a_time_is_the_series_read_whole(tmp_path, orientation, reverse_files):
    """Large series are read in runs of slices into one array (no second whole copy); SimpleITK reading
    every file at once is the oracle for the voxels and the geometry, whatever the files' order on disk."""
    from medseg.dicom import choose_series, read_series
    from tests.helpers import write_ct_series

    hounsfield = np.random.default_rng(4).integers(-1024, 3000, (7, 12, 10)).astype(np.int16)
    write_ct_series(tmp_path / "ct", hounsfield, orientation=orientation, reverse_files=reverse_files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(choose_series(tmp_path / "ct").files)
    whole = reader.Execute()
    for runs_of in (1, 2, 3, 64):  # 7 slices: runs of 3 end with a run that starts one slice early
        array, geometry = read_series(tmp_path / "ct", slices_at_a_time=runs_of)
        np.testing.assert_array_equal(array, sitk.GetArrayFromImage(whole).transpose(2, 1, 0))
        for attribute in ("GetOrigin", "GetSpacing", "GetDirection"):
            np.testing.assert_allclose(getattr(geometry, attribute)(), getattr(whole, attribute)(), atol=1e-6)
