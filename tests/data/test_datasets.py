import json

import numpy as np
import pytest

from medseg.config import load_config
from medseg.data.datasets import discover_dataset, list_inputs
from medseg.data.splits import make_split
from medseg.errors import MedsegError
from tests.helpers import shared_dataset, write_nifti


def _volume():
    return np.zeros((4, 4, 4), np.uint8)


def test_msd_layout(tmp_path):
    for cid in ("a_001", "a_002"):
        write_nifti(tmp_path / "imagesTr" / f"{cid}.nii.gz", _volume())
        write_nifti(tmp_path / "labelsTr" / f"{cid}.nii.gz", _volume())
    (tmp_path / "dataset.json").write_text(json.dumps({
        "modality": {"0": "MRI"}, "labels": {"0": "background", "1": "left", "2": "right"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                     for c in ("a_001", "a_002")],
    }))
    dataset = discover_dataset(tmp_path)
    assert dataset.layout == "msd" and dataset.modality == "MRI"
    assert dataset.class_names == ["background", "left", "right"]
    assert [c.case_id for c in dataset.cases] == ["a_001", "a_002"]


def test_nnunet_v2_layout(tmp_path):
    for cid in ("amos_0001", "amos_0002"):
        write_nifti(tmp_path / "imagesTr" / f"{cid}_0000.nii.gz", _volume())
        write_nifti(tmp_path / "labelsTr" / f"{cid}.nii.gz", _volume())
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    dataset = discover_dataset(tmp_path)
    assert dataset.layout == "nnunetv2" and dataset.modality == "CT" and dataset.class_names == ["background", "liver"]
    assert [c.case_id for c in dataset.cases] == ["amos_0001", "amos_0002"]
    assert all(c.label.name == f"{c.case_id}.nii.gz" for c in dataset.cases)


def test_plain_layout_without_dataset_json(tmp_path):
    for cid in ("x", "y"):
        write_nifti(tmp_path / "imagesTr" / f"{cid}.nii.gz", _volume())
        write_nifti(tmp_path / "labelsTr" / f"{cid}.nii.gz", _volume())
    dataset = discover_dataset(tmp_path)
    assert dataset.layout == "plain" and dataset.class_names is None and len(dataset.cases) == 2


def test_missing_label_and_empty_folder_are_errors(tmp_path):
    write_nifti(tmp_path / "imagesTr" / "x.nii.gz", _volume())
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(MedsegError, match="no label for case 'x'"):
        discover_dataset(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsegError, match="no imagesTr"):
        discover_dataset(empty)
    with pytest.raises(MedsegError, match="holds no images"):
        list_inputs(empty)


def test_split_is_seeded_disjoint_and_complete():
    ids = [f"c{i:02d}" for i in range(20)]
    split = make_split(ids, val_fraction=0.25, seed=3)
    assert split == make_split(list(reversed(ids)), val_fraction=0.25, seed=3)
    assert len(split["validation"]) == 5
    assert sorted(split["train"] + split["validation"]) == ids
    assert split != make_split(ids, val_fraction=0.25, seed=4)


def test_kfold_validation_sets_partition_the_cases():
    ids = [f"c{i:02d}" for i in range(11)]
    folds = [make_split(ids, num_folds=5, fold=f, seed=0)["validation"] for f in range(5)]
    assert sorted(sum(folds, [])) == ids
    with pytest.raises(MedsegError, match="data.fold"):  # checked with every other value when the config loads
        load_config(None, ["data.num_folds=5", "data.fold=5"])
    with pytest.raises(MedsegError, match="data.num_folds"):  # needs the data: checked when splitting
        make_split(ids[:4], num_folds=5, fold=0)


def test_shared_hippocampus_is_msd():
    dataset = discover_dataset(shared_dataset("hippocampus"))
    assert dataset.layout == "msd" and dataset.class_names == ["background", "Anterior", "Posterior"]
    assert len(dataset.cases) == 195 and all(c.label.is_file() for c in dataset.cases)


def test_shared_openkbp_is_nnunet_v2():
    dataset = discover_dataset(shared_dataset("openkbp_oar"))
    assert dataset.layout == "nnunetv2" and dataset.modality == "CT" and len(dataset.class_names) == 8
    assert dataset.cases[0].case_id == "kbp_001"
