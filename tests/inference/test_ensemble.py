"""Cross-validation folds and ensembles: one run folder per fold under one parent, the mean of several
runs' probabilities on each input's grid, and the entropy map of that mean."""

import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from medseg.cli import main
from medseg.engine.checkpoint import load_checkpoint
from medseg.resample import average_to_grid, entropy, probabilities_to_grid
from tests.helpers import TINY

PIPELINE = str(Path(__file__).resolve().parents[2] / "pipelines" / "demo_patch.yaml")


def _softmax(shape, seed):
    return torch.softmax(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), dim=0)


def test_the_mean_of_several_sources_is_resampled_and_argmaxed_slab_by_slab():
    a, b = _softmax((3, 6, 7, 5), 0), _softmax((3, 6, 7, 5), 1)
    grid = np.diag([2.0, 2.0, 3.0, 1.0])
    target = np.diag([1.0, 1.0, 1.5, 1.0])
    shape = (12, 14, 10)
    mean = probabilities_to_grid((a + b) / 2, grid, target, shape, keep_probabilities=True)
    separate = average_to_grid([(a, grid, 1), (b, grid, 1)], target, shape, keep_probabilities=True,
                               max_slab_voxels=14 * 10 * 3)
    averaged = average_to_grid([((a + b) / 2, grid, 2)], target, shape, keep_probabilities=True)
    for result in (separate, averaged):
        np.testing.assert_array_equal(result.labels, mean[0])
        np.testing.assert_allclose(result.probabilities.astype(np.float32), mean[1].astype(np.float32), atol=2e-3)
    weighted = average_to_grid([(a, grid, 1), (b.half(), grid, 3)], target, shape, keep_probabilities=True)
    expected = probabilities_to_grid((a + 3 * b) / 4, grid, target, shape, keep_probabilities=True)[1]
    np.testing.assert_allclose(weighted.probabilities.astype(np.float32), expected.astype(np.float32), atol=2e-3)
    torch.testing.assert_close(a, _softmax((3, 6, 7, 5), 0))  # the caller's tensors are given back as they were


def test_sources_on_different_grids_average_after_resampling():
    a, b = _softmax((2, 8, 8, 8), 2), _softmax((2, 4, 4, 4), 3)
    target = np.eye(4)
    fine, coarse = np.eye(4), np.diag([2.0, 2.0, 2.0, 1.0])
    pa = probabilities_to_grid(a, fine, target, (8, 8, 8), keep_probabilities=True)[1].astype(np.float32)
    pb = probabilities_to_grid(b, coarse, target, (8, 8, 8), keep_probabilities=True)[1].astype(np.float32)
    result = average_to_grid([(a, fine, 1), (b, coarse, 1)], target, (8, 8, 8), keep_probabilities=True)
    np.testing.assert_allclose(result.probabilities.astype(np.float32), (pa + pb) / 2, atol=2e-3)


def test_entropy_is_zero_when_certain_and_log_k_when_uniform():
    certain = torch.zeros(4, 2, 2, 2)
    certain[1] = 1
    assert torch.allclose(entropy(certain), torch.zeros(2, 2, 2), atol=1e-6)
    assert torch.allclose(entropy(torch.full((4, 2, 2, 2), 0.25)), torch.full((2, 2, 2), math.log(4)))


@pytest.fixture(scope="module")
def folds(phantom_dir, tmp_path_factory):
    parent = tmp_path_factory.mktemp("cv") / "cv"
    assert main(["train", PIPELINE, "--data", str(phantom_dir), "--output", str(parent), "--folds", "all",
                 "data.num_folds=2", *TINY, "train.max_minutes=null"]) == 0
    return parent


def test_folds_train_into_one_parent_with_one_configuration(folds):
    assert sorted(p.name for p in folds.iterdir()) == ["fold_0", "fold_1"]
    configs = [yaml.safe_load((folds / f"fold_{k}" / "config.yaml").read_text(encoding="utf-8")) for k in (0, 1)]
    assert [c["data"]["fold"] for c in configs] == [0, 1]
    assert configs[0]["data"]["spacing"] == configs[1]["data"]["spacing"]
    splits = [json.loads((folds / f"fold_{k}" / "split.json").read_text(encoding="utf-8")) for k in (0, 1)]
    assert set(splits[0]["validation"]).isdisjoint(splits[1]["validation"])
    assert sorted(splits[0]["validation"] + splits[1]["validation"]) == sorted(splits[0]["train"]
                                                                             + splits[0]["validation"])


def test_folds_resume_and_refuse_what_they_cannot_do(folds, phantom_dir, tmp_path, capsys):
    assert main(["train", PIPELINE, "--data", str(phantom_dir), "--output", str(folds), "--folds", "0", *TINY,
                 "data.num_folds=2"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    copy = tmp_path / "cv"
    shutil.copytree(folds, copy)
    assert main(["train", "--resume", "--output", str(copy), "--folds", "all", "train.max_epochs=2"]) == 0
    assert [load_checkpoint(copy / f"fold_{k}" / "last.pt")["epoch"] for k in (0, 1)] == [2, 2]
    assert main(["train", PIPELINE, "--data", str(phantom_dir), "--output", str(tmp_path / "x"), "--folds", "all",
                 *TINY]) == 2
    assert "data.num_folds of at least 2" in capsys.readouterr().err
    assert main(["train", PIPELINE, "--data", str(phantom_dir), "--output", str(tmp_path / "y"), "--folds", "3",
                 "data.num_folds=2", *TINY]) == 2
    assert "distinct folds in 0..1" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_an_ensemble_of_one_model_twice_predicts_as_the_model(folds, phantom_dir, tmp_path, capsys):
    images = phantom_dir / "imagesTr"
    twin = tmp_path / "twin"
    shutil.copytree(folds / "fold_0", twin)
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(["infer", "--model", str(folds / "fold_0"), "-i", str(images), "-o", str(single),
                 "--no-progress", "--device", "cpu"]) == 0
    assert main(["infer", "--model", str(folds / "fold_0"), "--model", str(twin), "-i", str(images),
                 "-o", str(double), "--no-progress", "--device", "cpu"]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out
    for path in sorted(single.glob("*.nii.gz")):
        np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj),
                                      np.asarray(nib.load(double / path.name).dataobj))


def test_the_folds_of_a_parent_predict_together_with_an_entropy_map(folds, phantom_dir, tmp_path, capsys):
    image = sorted((phantom_dir / "imagesTr").glob("*.nii.gz"))[0]
    out = tmp_path / "out"
    assert main(["infer", "--model", str(folds), "-i", str(image), "-o", str(out), "--save-uncertainty",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out
    case = image.name.removesuffix("_0000.nii.gz").removesuffix(".nii.gz")
    labels, uncertainty = nib.load(out / f"{case}.nii.gz"), nib.load(out / f"{case}_entropy.nii.gz")
    assert labels.shape == uncertainty.shape == nib.load(image).shape
    np.testing.assert_array_equal(uncertainty.affine, nib.load(image).affine)
    values = np.asarray(uncertainty.dataobj)
    assert values.dtype == np.float32 and values.min() >= 0 and values.max() <= math.log(4) + 1e-4
    assert main(["infer", "--model", str(folds / "fold_0"), "--model", str(folds / "fold_0"), "-i", str(image),
                 "-o", str(tmp_path / "o2")]) == 2
    assert "given twice" in capsys.readouterr().err
