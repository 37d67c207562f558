"""Detector settings planned from instance statistics (``planning/detection.py``) and from the slices a
comparison trains on (``models2d/detector_plan.py``)."""

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.models2d import ClassSpec
from medseg.models2d.detector_plan import plan_detectors, provisional, sampled_instance_stats
from medseg.planning.detection import FALLBACK, FPN_STRIDES, InstanceStats, plan_detection


def stats(scales, ratios=None, per_slice=(3,)) -> InstanceStats:
    scales = np.asarray(scales, dtype=float)
    ratios = np.ones_like(scales) if ratios is None else np.asarray(ratios, dtype=float)
    heights, widths = scales * np.sqrt(ratios), scales / np.sqrt(ratios)
    return InstanceStats(np.stack([heights, widths], axis=1), np.asarray(per_slice))


def test_anchors_span_the_instance_scales_and_tile_every_level():
    plan = plan_detection(stats(np.linspace(6, 90, 200)))
    sizes = plan["compare.anchor_sizes"].value
    assert len(sizes) == len(FPN_STRIDES) and sizes == sorted(sizes)
    assert all(size >= stride for size, stride in zip(sizes, FPN_STRIDES))
    assert sizes[0] == pytest.approx(np.percentile(np.linspace(6, 90, 200), 5), abs=1)
    assert sizes[-1] == pytest.approx(np.percentile(np.linspace(6, 90, 200), 95), abs=1)
    assert "instance scales" in plan["compare.anchor_sizes"].reason


def test_small_objects_give_small_anchors_but_never_below_the_stride():
    sizes = plan_detection(stats(np.full(50, 5.0)))["compare.anchor_sizes"].value
    assert sizes == [max(int(round(s)), stride) for s, stride in zip(np.geomspace(5, 10, 5), FPN_STRIDES)]


def test_aspect_ratios_follow_elongated_instances():
    elongated = plan_detection(stats(np.full(100, 20.0), ratios=np.geomspace(1 / 3, 3, 100)))
    wide, square, tall = elongated["compare.aspect_ratios"].value
    assert wide < 0.5 and square == 1.0 and tall > 2.0
    round_ones = plan_detection(stats(np.full(100, 20.0)))["compare.aspect_ratios"].value
    assert round_ones == [round(1 / 1.5, 2), 1.0, 1.5]  # three distinct shapes remain


def test_sample_counts_grow_with_busy_slices_within_torchvisions_ceiling():
    quiet = plan_detection(stats([10.0] * 10, per_slice=[1] * 10))
    busy = plan_detection(stats([10.0] * 10, per_slice=[40] * 10))
    assert quiet["compare.rpn_samples_per_image"].value == 64 and quiet["compare.roi_samples_per_image"].value == 32
    middle = plan_detection(stats([10.0] * 10, per_slice=[5] * 10))
    assert middle["compare.rpn_samples_per_image"].value == 160 and middle["compare.roi_samples_per_image"].value == 80
    assert busy["compare.rpn_samples_per_image"].value == 256 and busy["compare.roi_samples_per_image"].value == 512


def test_no_instance_falls_back_to_torchvisions_shapes():
    plan = plan_detection(InstanceStats(np.zeros((0, 2)), np.zeros(0)))
    assert {key: p.value for key, p in plan.items()} == FALLBACK


class Slices:
    """A dataset of label slices [1, H, W]: two square instances of 4 and 12 pixels, class 1 and 2."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        label = torch.zeros(1, 32, 32, dtype=torch.int64)
        label[0, 2:6, 2:6] = 1
        label[0, 10:22, 10:22] = 2
        label[0, 25:27, 0:12] = 3  # stuff: not an instance
        return {"label": label}


def test_stats_and_plan_come_from_the_training_slices_and_keep_what_the_user_set():
    classes = ClassSpec.from_config(["background", "a", "b", "c"], [], ["c"])
    measured = sampled_instance_stats(Slices(), classes, draws=6)
    assert sorted(measured.box_sizes.tolist()) == [[4, 4]] * 6 + [[12, 12]] * 6
    assert measured.per_slice.tolist() == [2] * 6
    settings = load_config(None, ["compare.rpn_samples_per_image=99"], command="compare").compare
    planned_settings, plan = plan_detectors(settings, Slices(), classes)
    assert planned_settings.rpn_samples_per_image == 99 and "compare.rpn_samples_per_image" not in plan
    assert planned_settings.anchor_sizes == plan["compare.anchor_sizes"].value
    assert provisional(settings).anchor_sizes == FALLBACK["compare.anchor_sizes"]
