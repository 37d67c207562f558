"""Our 2D scorers against well-kept libraries as oracles, on random predictions (the project rule: where we
keep our own code beside a library's, test it against the library).

* ``MaskAP`` against pycocotools' ``COCOeval`` (``iouType="segm"``): ``mask_AP`` is COCO's ``stats[0]`` (AP at
  IoU 0.50:0.95, area range "all", 100 detections) and ``mask_AP50`` its ``stats[1]``. Every ground truth has
  ``iscrowd=0`` and its pixel count as ``area``, so objects of every size count in "all".
* ``PanopticQuality`` against MONAI's ``PanopticQualityMetric``. Both match a predicted and a true segment of
  the same class when their IoU is strictly above 0.5 and pool TP, FP, FN and the matched IoUs of a class over
  all images. The conventions differ in three ways, so the comparison is per class and the class mean is
  taken here: MONAI's reductions either keep the classes apart (``sum_batch``, used here) or pool the counts
  of all classes (``mean``: a micro average, not our mean over classes); a class that never occurs gets 0
  from MONAI (nan without its smoothing term) where we leave it out; a class that occurs without any true
  positive has SQ 0/0 in MONAI (nan without smoothing) where we count 0. MONAI adds ``smooth_numerator``
  (1e-6) to the denominators; it is set to 0 here so the values are exact.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from monai.metrics import PanopticQualityMetric
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy import ndimage

from medseg.models2d.base import ClassSpec, Instances, PanopticResult, Prediction2D, Segment
from medseg.models2d.scoring import Evaluator2D, MaskAP, PanopticQuality

H = W = 32
IMAGES = 20
THINGS = (1, 2, 3, 4)  # class 4 is only ever predicted: no ground truth, left out by both
TRUE_CLASSES = (1, 2, 3)
SEEDS = range(6)


# ---------------------------------------------------------------- random scenes


def _blob(rng: np.random.Generator) -> np.ndarray:
    """A random rectangle or ellipse, from one pixel to about a third of the image across."""
    mask = np.zeros((H, W), dtype=bool)
    h, w = rng.integers(1, 4, size=2) if rng.random() < 0.25 else rng.integers(3, 13, size=2)
    y, x = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    if rng.random() < 0.5:
        mask[y : y + h, x : x + w] = True
    else:
        yy, xx = np.ogrid[:h, :w]
        mask[y : y + h, x : x + w] = ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1
    mask[y + h // 2, x + w // 2] = True
    return mask


def _perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A shifted copy with pixels flipped around its edge: IoUs with the original spread over 0 to 1."""
    dy, dx = rng.integers(-1, 2, size=2) * (rng.random(2) < 0.4)
    shifted = np.zeros_like(mask)
    shifted[max(dy, 0) : H + min(dy, 0), max(dx, 0) : W + min(dx, 0)] = mask[
        max(-dy, 0) : H + min(-dy, 0), max(-dx, 0) : W + min(-dx, 0)
    ]
    edge = ndimage.binary_dilation(shifted) & ~ndimage.binary_erosion(shifted)
    out = shifted ^ (edge & (rng.random((H, W)) < rng.uniform(0.0, 0.3)))
    return out if out.any() else mask


def _instances(masks: list[np.ndarray], labels: list[int], scores: list[float] | None = None) -> Instances:
    stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, H, W, dtype=torch.bool)
    score_t = None if scores is None else torch.tensor(scores, dtype=torch.float32)
    return Instances(stacked, torch.tensor(labels, dtype=torch.int64), torch.zeros(len(labels), 4), score_t)


def _detection_scene(seed: int, tied_scores: bool) -> list[tuple[Instances, Instances]]:
    """(prediction, truth) per image: 0-4 true objects of classes 1-3; most are found by one or two perturbed
    copies (sometimes of the wrong class), plus 0-3 false detections. ``tied_scores`` draws scores from four
    values, so the order among equal scores (within and across images) matters."""
    rng = np.random.default_rng(seed)
    scene = []
    for _ in range(IMAGES):
        truth_masks = [_blob(rng) for _ in range(rng.integers(0, 5))]
        truth_labels = [int(rng.choice(TRUE_CLASSES)) for _ in truth_masks]
        masks, labels = [], []
        for mask, label in zip(truth_masks, truth_labels):
            for _ in range((rng.random() < 0.85) + (rng.random() < 0.2)):
                masks.append(_perturb(rng, mask))
                labels.append(label if rng.random() < 0.9 else int(rng.choice(THINGS)))
        for _ in range(rng.integers(0, 4)):
            masks.append(_blob(rng))
            labels.append(int(rng.choice(THINGS)))
        scores = rng.integers(1, 5, size=len(masks)) / 4 if tied_scores else rng.random(len(masks))
        scene.append((_instances(masks, labels, scores.tolist()), _instances(truth_masks, truth_labels)))
    return scene


# ---------------------------------------------------------------- the oracles


def _rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]


def _coco_stats(scene: list[tuple[Instances, Instances]]) -> np.ndarray:
    """COCOeval's summary for segmentation; image ids follow the order of ``scene``."""
    annotations, results = [], []
    for image_id, (pred, truth) in enumerate(scene, start=1):
        for mask, label in zip(truth.masks.numpy(), truth.labels.tolist()):
            rle = _rle(mask)
            area, box = float(mask.sum()), mask_utils.toBbox(rle).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "segmentation": rle, "area": area, "bbox": box, "iscrowd": 0})
        for mask, label, score in zip(pred.masks.numpy(), pred.labels.tolist(), pred.scores.tolist()):
            results.append({"image_id": image_id, "category_id": label, "segmentation": _rle(mask), "score": score})
    with contextlib.redirect_stdout(io.StringIO()):
        truth_api = COCO()
        truth_api.dataset = {"images": [{"id": i, "height": H, "width": W} for i in range(1, len(scene) + 1)],
                             "annotations": annotations, "categories": [{"id": c, "name": str(c)} for c in THINGS]}
        truth_api.createIndex()
        evaluation = COCOeval(truth_api, truth_api.loadRes(results), iouType="segm")
        assert evaluation.params.maxDets[-1] == 100 and evaluation.params.areaRngLbl[0] == "all"
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def _ours(scene: list[tuple[Instances, Instances]]) -> dict[str, float]:
    ap = MaskAP(THINGS)
    for pred, truth in scene:
        ap.add(pred, truth)
    return ap.compute()


# ---------------------------------------------------------------- mask AP


@pytest.mark.parametrize("tied_scores", [False, True], ids=["distinct-scores", "tied-scores"])
@pytest.mark.parametrize("seed", SEEDS)
def test_mask_ap_matches_pycocotools(seed, tied_scores):
    """On random scenes (duplicates, wrong classes, false detections, empty images, one-pixel objects, ties),
    mask_AP and mask_AP50 are COCOeval's stats[0] and stats[1]."""
    scene = _detection_scene(seed, tied_scores)
    stats = _coco_stats(scene)
    ours = _ours(scene)
    assert 0.05 < stats[0] < 0.95  # the scene is neither trivial nor hopeless, so the comparison means something
    assert ours["mask_AP"] == pytest.approx(stats[0], abs=1e-9)
    assert ours["mask_AP50"] == pytest.approx(stats[1], abs=1e-9)


@pytest.mark.parametrize(("inter", "union"), [(13, 20), (7, 10), (9, 10), (19, 20), (11, 20), (3, 4)])
def test_mask_ap_iou_exactly_at_a_threshold_matches_pycocotools(inter, union):
    """A detection whose IoU equals one of the thresholds 0.55-0.95 is a match there (pycocotools compares
    IoU >= threshold in double precision). IoUs of small masks are such fractions often; in single precision
    13/20, 7/10, 9/10 and 19/20 fall just below the thresholds and the match would be lost."""
    truth = np.zeros((H, W), dtype=bool)
    truth.reshape(-1)[:union] = True
    pred = np.zeros((H, W), dtype=bool)
    pred.reshape(-1)[:inter] = True
    scene = [(_instances([pred], [1], [0.9]), _instances([truth], [1]))]
    stats = _coco_stats(scene)
    assert _ours(scene)["mask_AP"] == pytest.approx(stats[0], abs=1e-12)


def test_mask_ap_detection_tied_between_two_truths_matches_pycocotools():
    """A detection covering two equal, disjoint true objects has IoU exactly 0.5 with both; which one it takes
    decides whether the next detection, a copy of the first object, still finds a partner. pycocotools gives
    it the last of the tied ones (in annotation order), so here both detections are true positives at 0.5."""
    a, b = np.zeros((2, H, W), dtype=bool)
    a[0:4, 0:4] = True
    b[0:4, 4:8] = True
    scene = [(_instances([a | b, a.copy()], [1, 1], [0.9, 0.8]), _instances([a, b], [1, 1]))]
    stats = _coco_stats(scene)
    ours = _ours(scene)
    assert stats[1] == pytest.approx(1.0)  # the oracle's own reading of the case: both found at IoU 0.5
    assert ours["mask_AP50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["mask_AP"] == pytest.approx(stats[0], abs=1e-12)


# ---------------------------------------------------------------- panoptic quality

PANOPTIC_CLASSES = 4  # background, two thing classes, one stuff class
STUFF = 3


def _paint(regions: list[tuple[np.ndarray, int]], ids_from: int, id_step: int) -> PanopticResult:
    """A panoptic map from (mask, class) regions painted in order (later ones cover earlier ones); segment
    ids ``ids_from``, ``ids_from + id_step``, ... (not contiguous); segments covered completely are dropped."""
    ids = np.zeros((H, W), dtype=np.int32)
    labels = {}
    for n, (mask, label) in enumerate(regions):
        ids[mask] = ids_from + n * id_step
        labels[ids_from + n * id_step] = label
    segments = [Segment(int(i), labels[i], labels[i] != STUFF, int((ids == i).sum())) for i in np.unique(ids) if i]
    return PanopticResult(torch.from_numpy(ids), segments)


def _panoptic_scene(seed: int) -> list[tuple[PanopticResult, PanopticResult]]:
    """(prediction, truth) per image: a stuff band in most images and 0-5 things of classes 1-2; the
    prediction perturbs most true segments (sometimes giving the wrong class), drops some, adds 0-2 false
    ones and paints them in a shuffled order, so segments cover each other partly."""
    rng = np.random.default_rng(seed)
    scene = []
    for _ in range(IMAGES):
        regions = []
        if rng.random() < 0.7:
            band = np.zeros((H, W), dtype=bool)
            top = rng.integers(0, H - 6)
            band[top : top + rng.integers(4, 12)] = True
            regions.append((band, STUFF))
        regions += [(_blob(rng), int(rng.integers(1, 3))) for _ in range(rng.integers(0, 6))]
        predicted = [(_perturb(rng, m), c if rng.random() < 0.9 else int(rng.integers(1, 4)))
                     for m, c in regions if rng.random() < 0.85]
        predicted += [(_blob(rng), int(rng.integers(1, 4))) for _ in range(rng.integers(0, 3))]
        predicted = [predicted[i] for i in rng.permutation(len(predicted))]
        scene.append((_paint(predicted, ids_from=5, id_step=3), _paint(regions, ids_from=1, id_step=1)))
    return scene


def _monai_input(result: PanopticResult) -> torch.Tensor:
    """[1, 2, H, W]: MONAI's instance map and class map."""
    classes = torch.zeros_like(result.ids)
    for s in result.segments:
        classes[result.ids == s.id] = s.label
    return torch.stack([result.ids, classes])[None].int()


def _monai_per_class(scene: list[tuple[PanopticResult, PanopticResult]]) -> tuple[torch.Tensor, ...]:
    """MONAI's pooled [tp, fp, fn, iou_sum] and its PQ, SQ, RQ of each foreground class (no smoothing)."""
    counts = PanopticQualityMetric(PANOPTIC_CLASSES - 1, reduction="sum_batch", return_confusion_matrix=True)
    metrics = PanopticQualityMetric(PANOPTIC_CLASSES - 1, metric_name=("pq", "sq", "rq"), reduction="sum_batch",
                                    smooth_numerator=0.0)
    for pred, truth in scene:
        counts(y_pred=_monai_input(pred), y=_monai_input(truth))
        metrics(y_pred=_monai_input(pred), y=_monai_input(truth))
    return (counts.aggregate(), *metrics.aggregate())


def _monai_expected(scene: list[tuple[PanopticResult, PanopticResult]]) -> tuple[torch.Tensor, dict[str, float]]:
    """MONAI's per-class counts, and PQ, SQ, RQ in our convention: the mean of MONAI's per-class values over
    the classes that occur, SQ 0 for a class that occurs without a true positive (nan in MONAI)."""
    confusion, pq, sq, rq = (t.double() for t in _monai_per_class(scene))
    tp, fp, fn, _ = confusion.T
    seen = (tp + fp + fn) > 0
    sq = torch.where(seen & (tp == 0), 0.0, sq)
    return confusion, {"PQ": float(pq[seen].mean()), "SQ": float(sq[seen].mean()), "RQ": float(rq[seen].mean())}


@pytest.mark.parametrize("seed", SEEDS)
def test_panoptic_quality_matches_monai(seed):
    """Per class, our pooled TP, FP, FN and matched IoU sum are MONAI's; PQ, SQ and RQ are the means of MONAI's
    per-class values over the classes that occur."""
    scene = _panoptic_scene(seed)
    ours = PanopticQuality(PANOPTIC_CLASSES)
    for pred, truth in scene:
        ours.add(pred, truth)
    confusion, expected = _monai_expected(scene)
    tp, fp, fn, iou_sum = confusion.T
    assert tp.sum() > 10 and fp.sum() > 5 and fn.sum() > 5  # matches and both kinds of error occur
    np.testing.assert_array_equal(ours.tp[1:], tp.numpy())
    np.testing.assert_array_equal(ours.fp[1:], fp.numpy())
    np.testing.assert_array_equal(ours.fn[1:], fn.numpy())
    np.testing.assert_allclose(ours.iou_sum[1:], iou_sum.numpy(), rtol=1e-6)  # MONAI sums in float32
    assert ours.compute() == pytest.approx(expected, rel=1e-6)


def test_panoptic_quality_conventions_where_monai_differs():
    """Class 1 is matched, class 2 only predicted (FP, no TP), class 3 absent. MONAI (unsmoothed) gives class 3
    nan throughout and class 2 SQ nan; we leave class 3 out and count SQ 0 for class 2."""
    truth = np.zeros((H, W), dtype=bool)
    truth[0:4, 0:5] = True
    false = np.zeros((H, W), dtype=bool)
    false[10:12, 10:12] = True
    scene = [(_paint([(truth, 1), (false, 2)], 1, 1), _paint([(truth, 1)], 1, 1))]
    _, pq, sq, rq = _monai_per_class(scene)
    assert torch.isnan(pq[2]) and torch.isnan(sq[2]) and torch.isnan(rq[2]) and torch.isnan(sq[1])
    ours = PanopticQuality(PANOPTIC_CLASSES)
    ours.add(*scene[0])
    assert ours.compute() == pytest.approx({"PQ": 0.5, "SQ": 0.5, "RQ": 0.5})  # classes 1 and 2: (1 + 0) / 2
    assert ours.compute() == pytest.approx(_monai_expected(scene)[1])


def test_evaluator_matches_the_oracles_from_label_maps():
    """``Evaluator2D`` builds the truth itself from a label map (the 8-connected components of each thing class,
    one segment per stuff class); its mask_AP, mask_AP50 and PQ are the oracles' on that truth, built here
    with scipy, and on the predictions' instances and panoptic map."""
    classes = ClassSpec(("background", "a", "b", "stuff"), things=(1, 2), stuff=(STUFF,), lookup=(0, 1, 2, STUFF))
    rng = np.random.default_rng(0)
    evaluator = Evaluator2D(classes)
    detections, panoptic = [], []
    for pred, truth in _panoptic_scene(0):
        label = np.zeros((H, W), dtype=np.int64)
        for s in truth.segments:
            label[truth.ids.numpy() == s.id] = s.label
        regions = []
        for value in classes.things:
            components, count = ndimage.label(label == value, structure=np.ones((3, 3)))
            regions += [(components == k, value) for k in range(1, count + 1)]
        things = [s for s in pred.segments if s.label in classes.things]
        instances = _instances([(pred.ids == s.id).numpy() for s in things], [s.label for s in things],
                               rng.random(len(things)).tolist())
        evaluator.add(Prediction2D(pred.class_scores(PANOPTIC_CLASSES), instances, pred), torch.from_numpy(label))
        detections.append((instances, _instances([m for m, _ in regions], [c for _, c in regions])))
        panoptic.append((pred, _paint([*regions, (label == STUFF, STUFF)], 1, 1)))
    out = evaluator.compute()
    stats = _coco_stats(detections)
    assert out["mask_AP"] == pytest.approx(stats[0], abs=1e-9)
    assert out["mask_AP50"] == pytest.approx(stats[1], abs=1e-9)
    expected = _monai_expected(panoptic)[1]
    assert {k: out[k] for k in expected} == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("inter", "pred_area"), [(10, 10), (10, 11), (11, 11), (12, 12)])
def test_panoptic_quality_match_threshold_matches_monai(inter, pred_area):
    """IoU exactly 0.5 (10 of 20 px) is no match in either; just above it (11/20, 12/20) is; a prediction
    reaching out of the true segment (10 of 21 px) is not."""
    truth = np.zeros((H, W), dtype=bool)
    truth.reshape(-1)[:20] = True
    pred = np.zeros((H, W), dtype=bool)
    pred.reshape(-1)[20 - inter : 20 - inter + pred_area] = True
    scene = [(_paint([(pred, 1)], 1, 1), _paint([(truth, 1)], 1, 1))]
    ours = PanopticQuality(PANOPTIC_CLASSES)
    ours.add(*scene[0])
    confusion, pq, _, _ = _monai_per_class(scene)
    assert int(ours.tp[1]) == int(confusion[0, 0]) == int(inter / (20 + pred_area - inter) > 0.5)
    assert ours.compute()["PQ"] == pytest.approx(float(pq[0]), rel=1e-6)
