import nibabel as nib
import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import read_volume, write_volume
from tests.helpers import oblique_affine, write_dicom_series, write_nifti


def _ct_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, np.int16)
    sl = tuple(slice(s // 5, s - s // 5) for s in shape)
    image[sl] = 40 + rng.normal(0, 20, image[sl].shape).astype(np.int16)
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_output_has_the_input_shape_and_affine_for_oblique_anisotropic_input(tiny_run, tmp_path, suffix):
    inputs = tmp_path / "in"
    inputs.mkdir()
    affine = oblique_affine(spacing=(0.9, 1.4, 3.1))
    write_volume(inputs / f"scan{suffix}", _ct_like((45, 38, 17)), affine)
    Predictor(tiny_run, device="cpu").predict_paths(inputs, tmp_path / "out", progress=False, log=lambda _: None)
    written = nib.load(str(tmp_path / "out" / "scan.nii.gz"))
    assert written.shape == (45, 38, 17)
    assert written.get_data_dtype() == np.uint8
    source = read_volume(inputs / f"scan{suffix}")
    if suffix == ".nii.gz":
        np.testing.assert_array_equal(written.affine, nib.load(str(inputs / f"scan{suffix}")).affine)
    else:
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-4)
    assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1, 2, 3}


def test_refuses_to_overwrite_and_to_replace_inputs(tiny_run, tmp_path):
    image = write_nifti(tmp_path / "case_0000.nii.gz", _ct_like((24, 24, 12)))
    out = tmp_path / "out"
    predictor = Predictor(tiny_run, device="cpu")
    predictor.predict_paths(image, out, progress=False, log=lambda _: None)
    before = (out / "case.nii.gz").read_bytes()
    with pytest.raises(MedsegError, match="already exists; pass --overwrite"):
        predictor.predict_paths(image, out, progress=False, log=lambda _: None)
    assert (out / "case.nii.gz").read_bytes() == before
    same = write_nifti(tmp_path / "same" / "scan.nii.gz", _ct_like((24, 24, 12)))
    with pytest.raises(MedsegError, match="would overwrite an input"):
        predictor.predict_paths(same, same.parent, overwrite=True, progress=False, log=lambda _: None)


def test_probabilities_are_saved_on_the_input_grid_and_sum_to_one(tiny_run, tmp_path):
    image = write_nifti(tmp_path / "scan.nii.gz", _ct_like((30, 26, 14)), oblique_affine())
    Predictor(tiny_run, device="cpu").predict_paths(image, tmp_path / "out", save_probabilities=True,
                                                    progress=False, log=lambda _: None)
    saved = np.load(tmp_path / "out" / "scan_probabilities.npz")
    probabilities = saved["probabilities"].astype(np.float32)
    assert probabilities.shape == (4, 30, 26, 14)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=5e-3)
    labels = np.asanyarray(nib.load(str(tmp_path / "out" / "scan.nii.gz")).dataobj)
    agree = (probabilities.argmax(0) == labels).mean()
    assert agree > 0.99  # float16 ties aside, labels are the argmax of the saved probabilities


def test_missing_or_foreign_checkpoint(tmp_path):
    with pytest.raises(MedsegError, match="run folder not found"):
        Predictor(tmp_path / "nope")
    with pytest.raises(MedsegError, match="not a run folder"):
        Predictor(tmp_path)
    (tmp_path / "best.pt").write_bytes(b"garbage")
    with pytest.raises(MedsegError, match="best.pt: cannot load checkpoint"):
        Predictor(tmp_path)


def test_dicom_series_folder_is_predicted_under_the_folder_name(tiny_run, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    write_dicom_series(scans / "patient7", _ct_like((30, 28, 10)), (0.8, 0.8, 3.0), (-10.0, 5.0, 40.0))
    Predictor(tiny_run, device="cpu").predict_paths(scans, tmp_path / "out", progress=False, log=lambda _: None)
    written = nib.load(str(tmp_path / "out" / "patient7.nii.gz"))
    assert written.shape == (30, 28, 10)
    np.testing.assert_allclose(written.affine, read_volume(scans / "patient7").affine, atol=1e-4)


def test_infer_can_use_the_last_checkpoint_instead_of_the_best(tiny_run, tmp_path, capsys):
    from medseg.cli import main

    image = write_nifti(tmp_path / "case_0000.nii.gz", _ct_like((24, 24, 12)))
    for checkpoint in ("best.pt", "last.pt"):
        out = tmp_path / checkpoint
        assert main(["infer", "--model", str(tiny_run), "-i", str(image), "-o", str(out), "--device", "cpu",
                     "--checkpoint", checkpoint, "--no-progress"]) == 0
        assert (out / "case.nii.gz").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", "--model", str(tiny_run), "-i", str(image), "-o", str(tmp_path / "x"), "--checkpoint", "x.pt"])
    assert exit_info.value.code == 2 and not (tmp_path / "x").exists()


def test_a_scan_with_no_foreground_is_predicted_whole_not_cropped_to_nothing(tiny_run, tmp_path):
    image = write_nifti(tmp_path / "blank.nii.gz", np.full((24, 22, 12), -1000, np.int16))
    Predictor(tiny_run, device="cpu").predict_paths(image, tmp_path / "out", progress=False, log=lambda _: None)
    assert nib.load(str(tmp_path / "out" / "blank.nii.gz")).shape == (24, 22, 12)
