"""The 2D model contract, run against every registered adapter (tiny inputs, CPU), and the pieces every
model shares: targets from label maps, the panoptic merge, and the metrics, on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.models2d import MODELS_2D, ClassSpec, Instances, PanopticResult, Prediction2D, Segment, build_model_2d
from medseg.models2d.merge import merge_panoptic, paste_instances
from medseg.models2d.scoring import MaskAP, PanopticQuality, PixelScores, mask_iou
from medseg.models2d.targets import instance_target, make_batch, panoptic_target, semantic_target

SIZE = 64
# What each adapter must fill besides `semantic`: (instances, panoptic).
OUTPUTS = {"fcn": (False, False), "unet2d": (False, False), "maskrcnn": (True, False), "panoptic": (True, True)}
DATASET_CLASSES = ["background", "liver", "kidney_left", "kidney_right", "spine"]
# What the comparison plans from the training slices before it builds a detector to train.
DETECTOR_PLAN = ["compare.anchor_sizes=[8,16,32,64,128]", "compare.aspect_ratios=[0.5,1.0,2.0]",
                 "compare.rpn_samples_per_image=64", "compare.roi_samples_per_image=64"]


@pytest.fixture(scope="module")
def classes() -> ClassSpec:
    """background, liver (thing), kidney (thing: the two kidneys grouped), spine (stuff)."""
    return ClassSpec.from_config(DATASET_CLASSES, [["kidney", "kidney_left", "kidney_right"]], ["spine"])


@pytest.fixture(scope="module")
def config():
    return load_config(None, [*DETECTOR_PLAN, f"compare.slice_size=[{SIZE},{SIZE}]", "model.channels=[4,8,16]",
                              "model.strides=[2,2]", "model.num_res_units=0", "compare.val_slices_per_case=3"],
                       command="compare")


@pytest.fixture(scope="module")
def models(config, classes):
    torch.manual_seed(0)
    return {name: build_model_2d(name, config, classes) for name in MODELS_2D.names()}


def scene() -> torch.Tensor:
    """A [H, W] map of dataset label values: liver, the two kidneys, spine."""
    label = torch.zeros(SIZE, SIZE, dtype=torch.int64)
    label[8:24, 8:30] = 1
    label[36:48, 6:16] = 2
    label[36:48, 40:50] = 3
    label[50:58, 26:34] = 4
    return label


def image_of(label: torch.Tensor) -> torch.Tensor:
    return (label.float() / 4 + 0.05 * torch.randn(label.shape, generator=torch.Generator().manual_seed(0)))[None, None]


def test_every_adapter_is_under_contract():
    assert set(OUTPUTS) == set(MODELS_2D.names())


@pytest.mark.parametrize("name", sorted(OUTPUTS))
@pytest.mark.parametrize("empty", [False, True], ids=["labelled", "empty"])
def test_train_step_gives_finite_named_losses(models, classes, name, empty):
    label = torch.zeros(SIZE, SIZE, dtype=torch.int64) if empty else scene()
    model = models[name].train()  # as the Trainer leaves it
    losses = model.training_step({"image": image_of(label), "label": label[None, None]})
    assert losses and all(isinstance(k, str) and k.startswith("loss") for k in losses)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    terms = [v for k, v in losses.items() if k != "loss"]
    torch.testing.assert_close(losses["loss"], torch.stack(terms).sum())
    model.zero_grad()
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_predict_follows_the_contract_also_on_an_empty_image(models, classes, name):
    images = torch.cat([image_of(scene()), torch.zeros(1, 1, SIZE, SIZE)])
    predictions = models[name].predict(images)
    assert len(predictions) == 2 and all(isinstance(p, Prediction2D) for p in predictions)
    has_instances, has_panoptic = OUTPUTS[name]
    for p in predictions:
        assert p.semantic.shape == (classes.num_classes, SIZE, SIZE) and p.semantic.dtype == torch.float32
        assert torch.isfinite(p.semantic).all() and p.labels.shape == (SIZE, SIZE)
        assert (p.instances is not None) == has_instances and (p.panoptic is not None) == has_panoptic
        if has_instances:
            n = len(p.instances)
            assert p.instances.masks.shape == (n, SIZE, SIZE) and p.instances.masks.dtype == torch.bool
            assert p.instances.boxes.shape == (n, 4) and p.instances.scores.shape == (n,)
            assert set(p.instances.labels.tolist()) <= set(classes.things)
            assert ((p.instances.scores >= 0) & (p.instances.scores <= 1)).all()
        if has_panoptic:
            ids = p.panoptic.ids
            assert ids.shape == (SIZE, SIZE) and ids.dtype == torch.int32
            assert sorted(set(ids.unique().tolist()) - {0}) == [s.id for s in p.panoptic.segments]
            assert all(s.area == int((ids == s.id).sum()) for s in p.panoptic.segments)
            # The semantic view of a panoptic prediction is its map's classes.
            assert torch.equal(p.labels, p.panoptic.class_scores(classes.num_classes).argmax(0))
    assert models[name].training is False  # predict switched to eval mode itself


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_validation_scores_evenly_spaced_slices_of_a_volume(models, classes, name):
    """What the Trainer calls: per-class Dice [volumes, foreground classes] and a picture to show."""
    label = torch.stack([scene()] * 7, dim=-1)[None, None]
    image = torch.stack([image_of(scene())[0, 0]] * 7, dim=-1)[None, None]
    model = models[name].eval()
    out = model.validation_step({"image": image, "label": label})
    assert out["dice"].shape == (1, classes.num_classes - 1) and out["labels"].shape == (1, SIZE, SIZE)
    assert model.score_names == list(classes.names[1:])
    (picture,) = model.preview_images({"image": image, "label": label}, out).values()
    assert picture.shape == (3, SIZE, 2 * SIZE)


def test_validation_dice_is_one_for_a_perfect_prediction_and_nan_for_absent_classes(models, classes, monkeypatch):
    """The figure that picks best.pt: per-class Dice of the scored slices, after grouping the classes."""
    label = torch.stack([scene()] * 5, dim=-1)
    label[..., :, 26:34, :] = torch.where(label[..., :, 26:34, :] == 4, 0, label[..., :, 26:34, :])  # no spine
    model = models["unet2d"]

    def truth(image, indices):
        onehot = torch.nn.functional.one_hot(semantic_target(label[..., indices], classes), classes.num_classes)
        return [Prediction2D(onehot[:, :, i].permute(2, 0, 1).float()) for i in range(len(indices))]

    monkeypatch.setattr(model, "predict_slices", truth)
    out = model.validation_step({"image": label[None, None].float(), "label": label[None, None]})
    dice = dict(zip(model.score_names, out["dice"][0].tolist()))
    assert dice["liver"] == 1.0 and dice["kidney"] == 1.0 and dice["spine"] != dice["spine"]  # NaN: absent


def test_maskrcnn_v2_follows_the_contract(classes):
    config = load_config(None, [*DETECTOR_PLAN, "compare.maskrcnn_v2=true", f"compare.slice_size=[{SIZE},{SIZE}]"],
                         command="compare")
    v2 = build_model_2d("maskrcnn", config, classes)
    assert len(v2.network.rpn.head.conv) == 2  # v2's RPN head has two convolutions, v1's one
    losses = v2.train().training_step({"image": image_of(scene()), "label": scene()[None, None]})
    assert all(torch.isfinite(v) for v in losses.values())
    (prediction,) = v2.predict(image_of(scene()))
    assert prediction.semantic.shape == (classes.num_classes, SIZE, SIZE) and prediction.instances is not None


@pytest.mark.parametrize("v2", [False, True])
def test_the_resnet50_detector_is_torchvisions_own(classes, v2):
    from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

    from medseg.models2d.maskrcnn import build_detector

    config = load_config(None, [*DETECTOR_PLAN, f"compare.maskrcnn_v2={str(v2).lower()}"], command="compare")
    ours = build_detector(config.compare, len(classes.things)).state_dict()
    builder = maskrcnn_resnet50_fpn_v2 if v2 else maskrcnn_resnet50_fpn
    theirs = builder(weights=None, weights_backbone=None, num_classes=1 + len(classes.things)).state_dict()
    assert list(ours) == list(theirs)  # checkpoints of either load into the other
    assert [k for k in ours if ours[k].shape != theirs[k].shape] == ["backbone.body.conv1.weight"]  # 1 channel


def test_a_light_backbone_with_group_norm_trains_and_predicts(classes):
    config = load_config(None, [*DETECTOR_PLAN, "compare.backbone=resnet18", "compare.backbone_norm=group",
                                "compare.fpn_channels=128",
                                f"compare.slice_size=[{SIZE},{SIZE}]"], command="compare")
    heavy = load_config(None, [*DETECTOR_PLAN, f"compare.slice_size=[{SIZE},{SIZE}]"], command="compare")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for name in ("maskrcnn", "panoptic"):
        torch.manual_seed(0)
        model = build_model_2d(name, config, classes)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        detector = model.network.detector if name == "panoptic" else model.network
        mask_convolutions = [m for m in detector.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
        assert detector.backbone.out_channels == 128 and len(mask_convolutions) == 4
        assert all(m.out_channels == 128 for m in mask_convolutions)
        assert count(model) < count(build_model_2d(name, heavy, classes)) - 12e6  # ResNet-18 for ResNet-50
        losses = model.train().training_step({"image": image_of(scene()), "label": scene()[None, None]})
        assert all(torch.isfinite(v) for v in losses.values())
        (prediction,) = model.eval().predict(image_of(scene()))
        assert prediction.semantic.shape == (classes.num_classes, SIZE, SIZE)


# --- targets from label maps ---------------------------------------------------------------------


def test_class_spec_groups_and_splits_things_from_stuff(classes):
    assert classes.names == ("background", "liver", "kidney", "spine")
    assert classes.things == (1, 2) and classes.stuff == (3,)
    assert classes.lookup == (0, 1, 2, 2, 3)


@pytest.mark.parametrize("groups, stuff, key, word", [
    ([["kidney", "kidney_left", "kidnee_right"]], [], "compare.groups", "kidnee_right"),
    ([["a", "kidney_left"], ["b", "kidney_left"]], [], "compare.groups", "more than one group"),
    ([["liver", "kidney_left"]], [], "compare.groups", "already a dataset class"),
    ([["kidney"]], [], "compare.groups", "at least one class"),
    ([], ["kidney"], "compare.stuff_classes", "kidney"),
])
def test_class_spec_rejects_bad_groups_and_stuff(groups, stuff, key, word):
    with pytest.raises(MedsegError, match=key) as info:
        ClassSpec.from_config(DATASET_CLASSES, groups, stuff)
    assert word in str(info.value)


def test_targets_from_a_label_map(classes):
    label = scene()
    label[label == 3] = 0
    label[36:48, 16:26] = 3  # the right kidney now touches the left one: still two instances
    label[0:3, 60:63] = 1  # a second piece of liver
    label[3, 63] = 1  # touching it diagonally: the same piece (8-connected)
    semantic = semantic_target(label, classes)
    assert semantic.dtype == torch.int64 and set(semantic.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(semantic == 2, (label == 2) | (label == 3))
    instances = instance_target(label, classes)
    assert sorted(instances.labels.tolist()) == [1, 1, 2, 2]  # no instance of the stuff class
    assert instances.masks.dtype == torch.bool and instances.masks.sum(0).max() == 1
    assert torch.equal(instances.masks.any(0), (semantic == 1) | (semantic == 2))
    piece = next(i for i, m in enumerate(instances.masks) if m[0, 60])
    assert int(instances.masks[piece].sum()) == 10
    assert instances.boxes[piece].tolist() == [60.0, 0.0, 64.0, 4.0]  # x0, y0, x1, y1 on pixel edges
    panoptic = panoptic_target(semantic, instances, classes)
    assert [(s.label, s.is_thing) for s in panoptic.segments] == [(1, True)] * 2 + [(2, True)] * 2 + [(3, False)]
    assert torch.equal(panoptic.ids > 0, semantic > 0)


def test_targets_of_an_empty_slice(classes):
    batch = make_batch(torch.zeros(1, 1, SIZE, SIZE), torch.zeros(1, SIZE, SIZE, dtype=torch.int64), classes)
    (empty,) = batch.instances
    assert len(empty) == 0 and empty.masks.shape == (0, SIZE, SIZE) and empty.boxes.shape == (0, 4)
    assert panoptic_target(batch.semantic[0], empty, classes).segments == []


# --- the panoptic merge --------------------------------------------------------------------------


def _instances(boxes, labels, scores, size=10) -> Instances:
    masks = torch.zeros(len(boxes), size, size, dtype=torch.bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return Instances(masks, torch.tensor(labels, dtype=torch.int64),
                     torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(scores, dtype=torch.float64))


def test_merge_pastes_by_score_and_applies_the_overlap_rule():
    instances = _instances(
        [(0, 0, 4, 4),   # A: 16 px, score 0.6
         (2, 0, 6, 4),   # B: 16 px, score 0.9, takes the 8 px it shares with A first
         (4, 0, 6, 4),   # C: 8 px, all inside B -> overlap 1.0 > 0.5: dropped
         (6, 6, 9, 9),   # D: score 0.3 < 0.5: dropped
         (0, 5, 4, 9)],  # E: 16 px, free, kept
        labels=[1, 2, 1, 1, 2], scores=[0.6, 0.9, 0.8, 0.3, 0.55])
    result = paste_instances(instances, score_threshold=0.5, overlap_threshold=0.5)
    assert [(s.label, s.score, s.area) for s in result.segments] == [(2, 0.9, 16), (1, 0.6, 8), (2, 0.55, 16)]
    assert result.ids[0, 3] == 1 and result.ids[0, 1] == 2  # B kept the contested pixels, A the rest
    assert result.ids[7, 7] == 0
    # A stricter overlap threshold drops A (half of it is taken) as well.
    stricter = paste_instances(instances, score_threshold=0.5, overlap_threshold=0.4)
    assert [s.score for s in stricter.segments] == [0.9, 0.55]
    # overlap_threshold=1 pastes every instance over the score threshold; C, wholly under B, has no pixel left.
    assert [s.score for s in paste_instances(instances, 0.5, 1.0).segments] == [0.9, 0.6, 0.55]


def test_merge_adds_stuff_on_free_pixels_and_removes_small_stuff():
    instances = _instances([(0, 0, 5, 5)], labels=[1], scores=[0.9])
    semantic = torch.zeros(10, 10, dtype=torch.int64)
    semantic[0:10, 3:10] = 3  # stuff, 70 px, 10 of them under the instance
    semantic[8:10, 0:2] = 4  # stuff, 4 pixels: under the area limit
    semantic[6:8, 0:2] = 2  # a thing class in the semantic map makes no segment
    result = merge_panoptic(instances, semantic, stuff_classes=(3, 4), score_threshold=0.5,
                            overlap_threshold=0.5, stuff_area_limit=5)
    assert [(s.label, s.is_thing, s.area) for s in result.segments] == [(1, True, 25), (3, False, 60)]
    assert result.ids[0, 4] == 1 and result.ids[0, 5] == 2 and result.ids[9, 0] == 0 and result.ids[6, 0] == 0
    scores = result.class_scores(5)
    assert scores[1, 0, 0] == pytest.approx(0.9) and scores[3, 0, 9] == 1 and scores[0, 9, 0] == 1
    assert torch.equal(scores.argmax(0)[0], torch.tensor([1] * 5 + [3] * 5))


# --- metrics on hand-computed cases --------------------------------------------------------------


def test_pixel_scores_hand_computed():
    scores = PixelScores(("background", "a", "b"))
    truth1, pred1 = torch.zeros(4, 4, dtype=torch.int64), torch.zeros(4, 4, dtype=torch.int64)
    truth1[0, :] = 1  # 4 px of a
    pred1[0, :2] = 1  # 2 of them found
    scores.add(pred1, truth1)
    truth2, pred2 = torch.zeros(4, 4, dtype=torch.int64), torch.zeros(4, 4, dtype=torch.int64)
    truth2[:2, :] = 1  # 8 px of a, all found, plus 2 false ones
    pred2[:2, :] = 1
    pred2[2, :2] = 1
    scores.add(pred2, truth2)
    out = scores.compute()
    # Per image Dice of a: 2*2/(2+4) and 2*8/(10+8); b never occurs: left out of the means.
    assert out["dice_a"] == pytest.approx((4 / 6 + 16 / 18) / 2)
    assert out["iou"] == pytest.approx((2 / 4 + 8 / 10) / 2)
    assert math.isnan(out["dice_b"]) and out["dice"] == pytest.approx(out["dice_a"])
    # Pooled: tp 10, fp 2, fn 2.
    assert out["precision"] == pytest.approx(10 / 12) and out["recall"] == pytest.approx(10 / 12)
    assert out["f1"] == pytest.approx(20 / 24)
    assert out["pixel_accuracy"] == pytest.approx((32 - 4) / 32)


def test_mask_iou():
    a = _instances([(0, 0, 4, 4)], [1], [1.0]).masks
    b = _instances([(2, 0, 6, 4), (8, 8, 9, 9)], [1, 1], [1.0, 1.0]).masks
    assert mask_iou(a, b).tolist() == [[pytest.approx(8 / 24), 0.0]]


def test_mask_ap_hand_computed():
    # One 40x10 image, two ground-truth objects of 100 px, three detections: 0.9 on 82 px of the first
    # (IoU .82), 0.8 on nothing, 0.7 on 62 px of the second (IoU .62).
    g1, g2 = torch.zeros(2, 40, 10, dtype=torch.bool)
    g1[0:10], g2[20:30] = True, True
    d1, d2, d3 = torch.zeros(3, 40, 10, dtype=torch.bool)
    d1.view(-1)[:82] = True
    d2[35:40] = True
    d3.view(-1)[200:262] = True
    truth = Instances(torch.stack([g1, g2]), torch.tensor([1, 1]), torch.zeros(2, 4))
    pred = Instances(torch.stack([d1, d2, d3]), torch.tensor([1, 1, 1]), torch.zeros(3, 4),
                     torch.tensor([0.9, 0.8, 0.7]))
    ap = MaskAP((1, 2))  # class 2 has no ground truth: left out
    ap.add(pred, truth)
    out = ap.compute()
    # IoU .50-.60 (3 thresholds): TP FP TP -> recall .5 .5 1, monotone precision 1 2/3 2/3:
    # 51 recall points at 1, 50 at 2/3. IoU .65-.80 (4): only the first -> 51 points at 1. .85-.95: 0.
    low, middle = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert out["mask_AP50"] == pytest.approx(low)
    assert out["mask_AP"] == pytest.approx((3 * low + 4 * middle) / 10)


def test_mask_ap_extremes():
    truth = _instances([(0, 0, 4, 4)], [1], [1.0])
    perfect, missed = MaskAP((1,)), MaskAP((1,))
    perfect.add(truth, Instances(truth.masks, truth.labels, truth.boxes))
    missed.add(_instances([], [], []), Instances(truth.masks, truth.labels, truth.boxes))
    assert perfect.compute() == {"mask_AP": pytest.approx(1.0), "mask_AP50": pytest.approx(1.0)}
    assert missed.compute() == {"mask_AP": 0.0, "mask_AP50": 0.0}
    assert all(math.isnan(v) for v in MaskAP((1,)).compute().values())


def test_panoptic_quality_hand_computed():
    def panoptic(regions):
        ids = torch.zeros(10, 10, dtype=torch.int32)
        segments = []
        for i, (label, rows, cols) in enumerate(regions, start=1):
            ids[rows, cols] = i
            segments.append(Segment(i, label, label != 3, int((ids == i).sum())))
        return PanopticResult(ids, segments)

    truth = panoptic([(1, slice(0, 4), slice(0, 5)),     # thing, 20 px
                      (1, slice(0, 4), slice(6, 10)),    # thing, 16 px: missed (FN)
                      (3, slice(6, 10), slice(0, 10))])  # stuff, 40 px
    pred = panoptic([(1, slice(0, 4), slice(0, 4)),      # IoU 16/20 = 0.8 with the first thing
                     (1, slice(4, 6), slice(0, 10)),     # nothing there (FP)
                     (3, slice(7, 10), slice(0, 10))])   # IoU 30/40 = 0.75 with the stuff
    pq = PanopticQuality(4)
    pq.add(pred, truth)
    out = pq.compute()
    # class 1: TP 1 (IoU .8), FP 1, FN 1 -> SQ .8, RQ 1/2, PQ .4; class 3: TP 1 (IoU .75) -> PQ .75
    assert out["SQ"] == pytest.approx((0.8 + 0.75) / 2)
    assert out["RQ"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["PQ"] == pytest.approx((0.4 + 0.75) / 2)


def test_panoptic_quality_counts_a_segment_on_an_empty_image_as_false():
    pq = PanopticQuality(2)
    ids = torch.zeros(4, 4, dtype=torch.int32)
    ids[0, 0] = 1
    pq.add(PanopticResult(ids, [Segment(1, 1, True, 1)]), PanopticResult(torch.zeros(4, 4, dtype=torch.int32)))
    assert pq.compute() == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0}
    assert np.isnan(PanopticQuality(2).compute()["PQ"])


def test_an_enlarged_detector_input_still_answers_at_slice_size(classes):
    config = load_config(None, [*DETECTOR_PLAN, "compare.backbone=resnet18", "compare.detector_scale=2",
                                f"compare.slice_size=[{SIZE},{SIZE}]"], command="compare")
    for name in ("maskrcnn", "panoptic"):
        torch.manual_seed(0)
        model = build_model_2d(name, config, classes)
        detector = model.network.detector if name == "panoptic" else model.network
        assert detector.transform.min_size == (2 * SIZE,)
        assert detector.rpn.anchor_generator.sizes[0] == (16,)  # 8 slice pixels, twice as large
        losses = model.train().training_step({"image": image_of(scene()), "label": scene()[None, None]})
        assert all(torch.isfinite(v) for v in losses.values())
        (prediction,) = model.eval().predict(image_of(scene()))
        assert prediction.semantic.shape == (classes.num_classes, SIZE, SIZE)
        assert prediction.instances is not None and prediction.instances.masks.shape[-2:] == (SIZE, SIZE)
