import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.evaluation import EvaluationResult, evaluate_folders, format_table

SPACING = (2.0, 1.0, 1.0)
NAMES = {1: "liver", 2: "tumor"}


def _write(path, array, spacing=SPACING):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


def _volume(shape=(24, 24, 24)):
    return np.zeros(shape, dtype=np.uint8)


def _cases(tmp_path):
    """Two cases named like nnU-Net labels (amos_0001.nii.gz: no channel suffix on either side).

    amos_0001: liver shifted 2 voxels along axis 0 (spacing 2 mm) -> Dice 0.8, HD95 4 mm; no tumor anywhere.
    amos_0002: liver and tumor predicted exactly -> Dice 1, HD95 0.
    """
    gt, pred = tmp_path / "labelsTr", tmp_path / "pred"
    g1, p1 = _volume(), _volume()
    g1[4:14, 4:14, 4:14] = 1
    p1[6:16, 4:14, 4:14] = 1
    _write(gt / "amos_0001.nii.gz", g1)
    _write(pred / "amos_0001.nii.gz", p1)
    g2 = _volume()
    g2[2:12, 2:12, 2:12] = 1
    g2[15:20, 15:20, 15:20] = 2
    _write(gt / "amos_0002.nii.gz", g2)
    _write(pred / "amos_0002.nii.gz", g2.copy())
    _write(pred / "extra_case.nii.gz", g2.copy())  # no ground truth: ignored, counted
    (pred / "summary.txt").write_text("not an image")
    return pred, gt


def test_evaluate_folders_values_and_summary(tmp_path):
    pred, gt = _cases(tmp_path)
    result = evaluate_folders(pred, gt, class_names={0: "background", **NAMES})
    assert isinstance(result, EvaluationResult)
    assert result.class_names == NAMES
    assert [row["case"] for row in result.per_case] == ["amos_0001", "amos_0002"]
    row1, row2 = result.per_case
    assert row1["dice_liver"] == pytest.approx(0.8)
    assert row1["iou_liver"] == pytest.approx(800 / 1200)
    assert row1["precision_liver"] == pytest.approx(0.8)
    assert row1["recall_liver"] == pytest.approx(0.8)
    assert row1["hd95_liver"] == pytest.approx(4.0)
    assert math.isnan(row1["dice_tumor"]) and math.isnan(row1["hd95_tumor"])  # absent on both sides
    assert row2["dice_liver"] == pytest.approx(1.0) and row2["dice_tumor"] == pytest.approx(1.0)
    assert row2["hd95_tumor"] == pytest.approx(0.0)

    s = result.summary
    assert s["num_cases"] == 2
    assert s["unmatched_predictions"] == 1
    assert s["per_class"]["liver"]["dice"] == pytest.approx(0.9)
    assert s["per_class"]["liver"]["hd95"] == pytest.approx(2.0)
    assert s["per_class"]["liver"]["num_present"] == 2
    assert s["per_class"]["tumor"]["dice"] == pytest.approx(1.0)  # NaN of amos_0001 excluded
    assert s["per_class"]["tumor"]["num_present"] == 1
    assert s["mean_dice"] == pytest.approx(0.95)
    assert s["mean_hd95"] == pytest.approx(1.0)
    assert s["cases"] == result.per_case


def test_predicted_but_absent_class_counts_as_zero(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    g = _volume()
    g[4:14, 4:14, 4:14] = 1
    p = g.copy()
    p[18:22, 18:22, 18:22] = 2
    _write(gt / "a.nii.gz", g)
    _write(pred / "a.nii.gz", p)
    result = evaluate_folders(pred, gt)  # inferred names: labels seen on either side
    assert result.class_names == {1: "class_1", 2: "class_2"}
    row = result.per_case[0]
    assert row["dice_class_2"] == 0.0 and math.isnan(row["hd95_class_2"])
    assert result.summary["per_class"]["class_2"]["num_present"] == 0
    assert result.summary["mean_dice"] == pytest.approx(0.5)


def test_a_partial_class_is_scored_only_where_the_ground_truth_annotates_it(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    g = _volume()
    g[4:14, 4:14, 4:14] = 1
    p = g.copy()
    p[18:22, 18:22, 18:22] = 2  # a tumour predicted where the ground truth has none
    _write(gt / "a.nii.gz", g)
    _write(pred / "a.nii.gz", p)
    g2 = g.copy()
    g2[18:22, 18:22, 18:22] = 2
    _write(gt / "b.nii.gz", g2)
    _write(pred / "b.nii.gz", g2)
    plain = evaluate_folders(pred, gt, class_names=NAMES)
    assert plain.summary["per_class"]["tumor"]["dice"] == pytest.approx(0.5)
    partial = evaluate_folders(pred, gt, class_names=NAMES, partial_classes=["tumor"])
    assert math.isnan(partial.per_case[0]["dice_tumor"]) and partial.per_case[1]["dice_tumor"] == 1.0
    assert partial.summary["per_class"]["tumor"]["dice"] == 1.0
    assert partial.summary["partial_classes"] == ["tumor"]
    assert "tumor: scored only on the cases" in format_table(partial)
    with pytest.raises(MedsegError, match="partial classes: lesion not among the classes"):
        evaluate_folders(pred, gt, class_names=NAMES, partial_classes=["lesion"])


def test_json_and_csv_written(tmp_path):
    pred, gt = _cases(tmp_path)
    out = tmp_path / "results" / "nested" / "metrics.json"
    result = evaluate_folders(pred, gt, class_names=NAMES, output_json=out)
    text = out.read_text(encoding="utf-8")
    assert "NaN" not in text
    data = json.loads(text)
    assert data["mean_dice"] == pytest.approx(0.95)
    assert data["num_cases"] == 2 and data["unmatched_predictions"] == 1
    assert set(data["per_class"]) == {"liver", "tumor"}
    assert data["per_class"]["liver"]["num_present"] == 2
    assert data["cases"][0]["case"] == "amos_0001"
    assert data["cases"][0]["dice_tumor"] is None  # NaN -> null
    assert data["cases"][0]["hd95_liver"] == pytest.approx(4.0)

    csv_path = out.with_suffix(".csv")
    assert csv_path.name == "metrics.csv"
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case"] for r in rows] == ["amos_0001", "amos_0002"]
    assert list(rows[0]) == list(result.per_case[0])
    assert float(rows[0]["dice_liver"]) == pytest.approx(0.8)
    assert rows[0]["dice_tumor"] == ""
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_format_table_lists_classes_and_mean(tmp_path):
    pred, gt = _cases(tmp_path)
    table = format_table(evaluate_folders(pred, gt, class_names=NAMES))
    lines = table.splitlines()
    assert "Dice" in lines[0] and "HD95" in lines[0]
    liver = next(line for line in lines if line.startswith("liver"))
    assert "0.9000" in liver and "2.00" in liver
    assert any(line.startswith("tumor") for line in lines)
    assert lines[-1].startswith("mean") and "0.9500" in lines[-1]


def test_without_hd95(tmp_path):
    pred, gt = _cases(tmp_path)
    result = evaluate_folders(pred, gt, class_names=NAMES, include_hd95=False)
    assert not any(key.startswith("hd95_") for key in result.per_case[0])
    assert math.isnan(result.summary["mean_hd95"])
    assert result.summary["mean_dice"] == pytest.approx(0.95)


def test_prediction_with_channel_suffix_matches(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    g = _volume()
    g[4:14, 4:14, 4:14] = 1
    _write(gt / "case_001.nii.gz", g)
    _write(pred / "case_001_0000.nii.gz", g)
    result = evaluate_folders(pred, gt)
    assert result.per_case[0]["case"] == "case_001"
    assert result.per_case[0]["dice_class_1"] == pytest.approx(1.0)
    assert result.summary["unmatched_predictions"] == 0


def test_missing_prediction_is_an_error(tmp_path):
    pred, gt = _cases(tmp_path)
    (pred / "amos_0002.nii.gz").unlink()
    with pytest.raises(MedsegError, match="amos_0002") as info:
        evaluate_folders(pred, gt)
    assert str(pred) in str(info.value)


def test_shape_mismatch_is_an_error(tmp_path):
    pred, gt = _cases(tmp_path)
    _write(pred / "amos_0001.nii.gz", _volume((24, 24, 20)))
    with pytest.raises(MedsegError, match=r"shape \(24, 24, 20\) differs from ground truth") as info:
        evaluate_folders(pred, gt)
    assert str(info.value).startswith(str(pred / "amos_0001.nii.gz"))


def test_unknown_label_in_prediction_is_an_error(tmp_path):
    pred, gt = _cases(tmp_path)
    p = _volume()
    p[1:3, 1:3, 1:3] = 3
    _write(pred / "amos_0001.nii.gz", p)
    with pytest.raises(MedsegError, match="amos_0001.nii.gz: label value"):
        evaluate_folders(pred, gt, class_names=NAMES)


def test_missing_and_empty_folders(tmp_path):
    pred, gt = _cases(tmp_path)
    with pytest.raises(MedsegError, match="nowhere"):
        evaluate_folders(tmp_path / "nowhere", gt)
    with pytest.raises(MedsegError, match="nowhere"):
        evaluate_folders(pred, tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedsegError, match="empty"):
        evaluate_folders(pred, empty)
    with pytest.raises(MedsegError, match="empty"):
        evaluate_folders(empty, gt)
