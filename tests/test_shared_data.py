"""The real data in ../shared/data, when present: checks, a short training run, CT inference."""

import json

import nibabel as nib
import numpy as np

from medseg.config import load_config
from medseg.data.checks import check_dataset
from medseg.data.datasets import discover_dataset
from medseg.data.planning import plan
from medseg.inference import Predictor
from medseg.workflows.training import train
from tests.helpers import TINY, shared_dataset

PIPELINES = __import__("pathlib").Path(__file__).resolve().parents[1] / "pipelines"


def test_hippocampus_passes_check():
    dataset, problems = check_dataset(shared_dataset("hippocampus"))
    assert problems == [] and len(dataset.cases) == 195


def test_openkbp_planning_finds_ct_window_and_spacing():
    root = shared_dataset("openkbp_oar")
    dataset = discover_dataset(root)
    config = plan(load_config(PIPELINES / "openkbp_patch.yaml"), dataset, dataset.cases[:6])
    assert config.data.modality == "ct" and len(config.data.class_names) == 8
    lo, hi = config.data.intensity_window
    assert -1000 <= lo < 0 < hi <= 2000  # soft tissue and bone (mandible) inside the window
    np.testing.assert_allclose(config.data.spacing, [3.9, 3.9, 2.5], atol=0.3)


def test_short_hippocampus_run_evaluates_validation_cases_in_original_geometry(tmp_path):
    root = shared_dataset("hippocampus")
    run = train(PIPELINES / "hippocampus_patch.yaml", data_dir=root, output=tmp_path / "run", log=lambda _: None,
                overrides=[*TINY, "patch.patch_size=[32,32,32]", "data.spacing=[1.0,1.0,1.0]", "data.max_cases=8",
                           "train.final_validation=true"])
    summary = json.loads((run / "validation" / "metrics.json").read_text(encoding="utf-8"))
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    assert summary["num_cases"] == len(split["validation"]) == 2
    assert set(summary["per_class"]) == {"Anterior", "Posterior"}
    for case in split["validation"]:
        prediction = nib.load(str(run / "validation" / "predictions" / f"{case}.nii.gz"))
        image = nib.load(str(root / "imagesTr" / f"{case}.nii.gz"))
        assert prediction.shape == image.shape
        np.testing.assert_array_equal(prediction.affine, image.affine)


def test_real_ct_crop_is_predicted_in_its_own_geometry(tiny_run, tmp_path):
    image = shared_dataset("ct_example") / "example_ct_sm.nii.gz"
    Predictor(tiny_run, device="cpu").predict_paths(image, tmp_path, progress=False, log=lambda _: None)
    prediction = nib.load(str(tmp_path / "example_ct_sm.nii.gz"))
    source = nib.load(str(image))
    assert prediction.shape == source.shape == (122, 101, 30)
    np.testing.assert_array_equal(prediction.affine, source.affine)
