"""The large-CT benchmark's inputs are what they claim: a longer scan covers a longer body at the same
spacing, and its DICOM copy is the same volume in the same place."""

import nibabel as nib
import numpy as np

from medseg.benchmark.large_ct import tall_ct, write_series
from medseg.io import read_volume
from tests.helpers import oblique_affine, write_nifti


def test_a_taller_scan_keeps_the_spacing_and_continues_by_mirroring(tmp_path):
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    base = write_nifti(tmp_path / "base.nii.gz", array, np.diag([0.7, 0.7, 2.0, 1.0]))
    tall = read_volume(tall_ct(base, 10, tmp_path / "tall.nii.gz"))
    assert tall.array.shape == (6, 5, 10)
    np.testing.assert_allclose(tall.affine, nib.load(base).affine, atol=1e-5)
    np.testing.assert_array_equal(tall.array[..., :4], array)
    np.testing.assert_array_equal(tall.array[..., 4:8], array[..., ::-1])  # continuous at the join
    np.testing.assert_array_equal(tall.array[..., 8:], array[..., :2])


def test_the_dicom_copy_is_the_same_volume_in_the_same_place(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, (7, 6, 5)).astype(np.int16)
    source = write_nifti(tmp_path / "ct.nii.gz", array, oblique_affine())
    series = read_volume(write_series(source, tmp_path / "dicom"))
    original = read_volume(source)
    np.testing.assert_allclose(series.affine, original.affine, atol=1e-3)
    np.testing.assert_array_equal(series.array, original.array)


def test_a_random_weights_run_loads_as_medseg_infer_loads_a_trained_one(phantom_dir, tmp_path):
    from medseg.benchmark.inference_cases import random_run
    from medseg.inference import Predictor

    run = random_run("demo_patch", phantom_dir, [], tmp_path / "run")
    assert Predictor(run).name == "run"
