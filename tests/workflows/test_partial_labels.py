"""Training and scoring on a dataset whose label maps leave a class out of some cases."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medseg.cli import main
from medseg.data.transforms import AnnotatedClassesd
from tests.helpers import TINY

KIDNEY = 2


@pytest.fixture
def uncontoured_kidneys(phantom_dir, tmp_path):
    """The phantoms with the kidneys left out of half the label maps, as clinical contours leave organs out."""
    data = shutil.copytree(phantom_dir, tmp_path / "partial")
    for path in sorted((data / "labelsTr").glob("*.nii.gz"))[::2]:
        image = nib.load(str(path))
        array = np.asarray(image.dataobj).copy()
        array[array == KIDNEY] = 0
        nib.save(nib.Nifti1Image(array, image.affine), str(path))
    return data


def test_annotated_classes_mark_only_the_declared_classes_a_case_lacks():
    label = MetaTensor(torch.zeros((1, 4, 4, 4), dtype=torch.uint8))
    label[0, :2] = 1
    names = ["background", "liver", "kidney", "spine"]
    out = AnnotatedClassesd(names, ["kidney"])({"label": label})
    assert out["annotated"].tolist() == [True, True, False, True]  # spine is absent too, but not declared
    label[0, 3] = KIDNEY
    assert AnnotatedClassesd(names, ["kidney"])({"label": label})["annotated"].all()


def test_train_on_partial_labels_scores_a_class_only_where_it_is_annotated(uncontoured_kidneys, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", str(uncontoured_kidneys), "--output", str(run), *TINY,
            "train.final_validation=true", "data.partial_classes=[kidney]"]
    assert main(args) == 0
    metrics = json.loads((run / "validation" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["partial_classes"] == ["kidney"]
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    lacking = {p.name.split(".")[0] for p in sorted((uncontoured_kidneys / "labelsTr").glob("*.nii.gz"))[::2]}
    for row in metrics["cases"]:
        assert (row["dice_kidney"] is None) == (row["case"] in lacking)
    assert set(split["validation"]) == {row["case"] for row in metrics["cases"]}


def test_partial_classes_are_checked_before_anything_is_written(uncontoured_kidneys, tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", "--data", str(uncontoured_kidneys), "--output", str(run), *TINY]
    assert main([*base, "data.partial_classes=[kidneys]"]) == 2
    assert "data.partial_classes" in capsys.readouterr().err and not run.exists()
    assert main([*base, "data.partial_classes=[kidney]", "train.loss=dice_focal"]) == 2
    assert "train.loss" in capsys.readouterr().err and not run.exists()
