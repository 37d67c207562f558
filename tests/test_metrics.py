import math

import numpy as np
import pytest
import torch

from medseg.metrics import segmentation_metrics


def _cube(shape=(30, 30, 30), start=(5, 5, 5), size=10, label=1, out=None):
    out = np.zeros(shape, dtype=np.int64) if out is None else out
    out[tuple(slice(s, s + size) for s in start)] = label
    return out


def test_shifted_cube_overlap_metrics_are_exact():
    target = _cube(start=(5, 5, 5))
    pred = _cube(start=(7, 5, 5))  # shifted 2 voxels along axis 0: overlap 8x10x10
    m = segmentation_metrics(pred, target, num_classes=2)
    inter, a, b = 800, 1000, 1000
    assert set(m) == {"dice", "iou", "precision", "recall", "hd95"}
    assert all(v.shape == (1,) for v in m.values())
    assert m["dice"][0] == pytest.approx(2 * inter / (a + b))  # 0.8
    assert m["iou"][0] == pytest.approx(inter / (a + b - inter))  # 2/3
    assert m["precision"][0] == pytest.approx(inter / b)
    assert m["recall"][0] == pytest.approx(inter / a)
    assert m["hd95"][0] == pytest.approx(2.0)  # voxels without spacing


@pytest.mark.parametrize(
    "axis, shift, spacing, expected_mm",
    [(0, 2, (2.5, 1.0, 1.0), 5.0), (2, 2, (1.0, 1.0, 3.0), 6.0), (1, 3, (0.7, 1.5, 0.7), 4.5)],
)
def test_hd95_of_shifted_cube_is_the_shift_in_mm(axis, shift, spacing, expected_mm):
    target = _cube()
    start = [5, 5, 5]
    start[axis] += shift
    pred = _cube(start=tuple(start))
    m = segmentation_metrics(pred, target, num_classes=2, spacing=spacing)
    assert m["hd95"][0] == pytest.approx(expected_mm)


def test_absent_everywhere_is_nan_and_predicted_but_absent_is_zero():
    target = _cube(label=1)
    pred = _cube(label=1)
    _cube(start=(20, 20, 20), size=4, label=2, out=pred)  # class 2 predicted, not in ground truth
    m = segmentation_metrics(pred, target, num_classes=4)  # class 3 absent from both
    assert m["dice"].shape == (3,)
    assert m["dice"][0] == pytest.approx(1.0)
    assert m["hd95"][0] == pytest.approx(0.0)
    # predicted but absent from ground truth: counted as a failure, HD95 undefined
    assert m["dice"][1] == 0.0 and m["iou"][1] == 0.0 and m["precision"][1] == 0.0 and m["recall"][1] == 0.0
    assert math.isnan(m["hd95"][1])
    # absent from both: NaN everywhere, so nanmean leaves it out
    for name in m:
        assert math.isnan(m[name][2])
    assert np.nanmean(m["dice"]) == pytest.approx(0.5)


def test_missed_class_scores_zero_and_nan_hd95():
    target = _cube()
    pred = np.zeros_like(target)
    m = segmentation_metrics(pred, target, num_classes=2)
    assert m["dice"][0] == 0.0 and m["recall"][0] == 0.0 and m["precision"][0] == 0.0
    assert math.isnan(m["hd95"][0])


def test_include_hd95_false_gives_nan():
    target = _cube()
    m = segmentation_metrics(target, target, num_classes=2, include_hd95=False)
    assert m["dice"][0] == pytest.approx(1.0)
    assert math.isnan(m["hd95"][0])


def test_two_dimensional_with_spacing_and_torch_input():
    target = np.zeros((30, 30), dtype=np.int16)
    pred = np.zeros((30, 30), dtype=np.int16)
    target[5:15, 5:15] = 1
    pred[5:15, 8:18] = 1  # shift 3 along axis 1, overlap 10x7
    m = segmentation_metrics(torch.from_numpy(pred), torch.from_numpy(target), num_classes=2, spacing=(1.0, 0.5))
    assert m["dice"][0] == pytest.approx(2 * 70 / 200)
    assert m["iou"][0] == pytest.approx(70 / 130)
    assert m["hd95"][0] == pytest.approx(1.5)


def test_cube_touching_the_border():
    target = _cube(start=(0, 0, 0), shape=(12, 12, 12))
    pred = _cube(start=(2, 0, 0), shape=(12, 12, 12))
    m = segmentation_metrics(pred, target, num_classes=2, spacing=(2.0, 1.0, 1.0))
    assert m["dice"][0] == pytest.approx(0.8)
    assert m["hd95"][0] == pytest.approx(4.0)


def test_bad_inputs_raise():
    a = np.zeros((4, 4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(a, np.zeros((4, 4, 5), dtype=np.int64), num_classes=2)
    with pytest.raises(ValueError, match="spacing"):
        segmentation_metrics(a, a, num_classes=2, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="non-integer"):
        segmentation_metrics(a + 0.5, a, num_classes=2)
