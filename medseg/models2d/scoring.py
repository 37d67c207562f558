"""One scoring module for every 2D model: pixel metrics for any output, mask AP where there are instances,
panoptic quality where there is a panoptic map. Each scorer accumulates image by image (``add``) and
reports over the whole set (``compute``), so thousands of slices never sit in memory at once.

Conventions:

* Pixel metrics, for each foreground class: ``dice`` and ``iou`` are computed per image and averaged
  over the images where the class is predicted or present (absent from both: not counted, not perfect);
  ``precision``, ``recall`` and ``f1`` come from pixel counts pooled over all images (so ``f1`` is the
  dataset-level Dice, which weighs large structures more than the per-image mean does);
  ``pixel_accuracy`` is the share of all pixels, background included, given the right class.
  Means are over the classes that occur.
* Mask AP follows pycocotools (area range "all", at most 100 detections per image and class; the
  models may keep fewer, see ``compare.detections_per_image``): greedy
  matching in score order at IoU thresholds 0.50:0.05:0.95, precision made monotone, read at 101 recall
  points; classes without ground truth are left out. ``mask_AP`` is the mean over thresholds and
  classes, ``mask_AP50`` the value at IoU 0.5.
* Panoptic quality (Kirillov et al., CVPR 2019): a predicted and a ground-truth segment of the same
  class match when their IoU exceeds 0.5; PQ = sum of matched IoUs / (TP + FP/2 + FN/2) = SQ x RQ per
  class, averaged over the classes that occur. Background is not a segment, so a false segment in an
  empty image counts as a false positive (there is no void label to excuse it).
"""

from __future__ import annotations

import numpy as np
import torch

from medseg.metrics import dice_from_counts
from medseg.models2d.base import ClassSpec, Instances, PanopticResult, Prediction2D
from medseg.models2d.targets import instance_target, panoptic_target, semantic_target

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every mask in ``a`` [N, H, W] with every mask in ``b`` [M, H, W] -> [N, M] float64.

    The pixel counts are exact in float32 (below 2**24 pixels); the ratio is taken in float64, as pycocotools
    does: IoUs of small masks are often exactly a threshold (13/20 = 0.65), and in float32 several of them
    (0.65, 0.7, 0.9, 0.95) round below it and would lose the match."""
    a, b = a.flatten(1).float(), b.flatten(1).float()
    inter = (a @ b.T).double()
    union = a.sum(1).double()[:, None] + b.sum(1).double()[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))


class PixelScores:
    """Dice, IoU, pixel accuracy, precision, recall and F1 from label maps."""

    def __init__(self, class_names: tuple[str, ...]) -> None:
        self.names = class_names
        k = len(class_names)
        self.pooled = torch.zeros(k, k, dtype=torch.int64)
        self.dice_sum, self.iou_sum, self.images = (torch.zeros(k - 1, dtype=torch.float64) for _ in range(3))

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        k = len(self.names)
        confusion = torch.bincount((target.flatten() * k + pred.flatten()).cpu(), minlength=k * k).reshape(k, k)
        self.pooled += confusion
        tp, fp, fn = self._counts(confusion)
        seen = (tp + fp + fn) > 0
        self.dice_sum += dice_from_counts(tp, fp, fn)
        self.iou_sum += torch.where(seen, tp / (tp + fp + fn).clamp(min=1), 0)
        self.images += seen.double()

    @staticmethod
    def _counts(confusion: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """True positives, false positives, false negatives of each foreground class (rows: truth)."""
        tp = confusion.diag().double()
        return tp[1:], (confusion.sum(0) - tp)[1:], (confusion.sum(1) - tp)[1:]

    def compute(self) -> dict[str, float]:
        tp, fp, fn = self._counts(self.pooled)
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        seen = (tp + fp + fn) > 0
        precision = torch.where(seen, tp / (tp + fp).clamp(min=1), nan)
        recall = torch.where(seen, tp / (tp + fn).clamp(min=1), nan)
        f1 = torch.where(seen, dice_from_counts(tp, fp, fn), nan)
        dice = torch.where(self.images > 0, self.dice_sum / self.images.clamp(min=1), nan)
        iou = torch.where(self.images > 0, self.iou_sum / self.images.clamp(min=1), nan)
        total = int(self.pooled.sum())
        out = {"dice": dice, "iou": iou, "precision": precision, "recall": recall, "f1": f1}
        scores = {name: float(np.nanmean(v.numpy())) if bool(seen.any()) else float("nan") for name, v in out.items()}
        scores["pixel_accuracy"] = float(self.pooled.diag().sum()) / total if total else float("nan")
        scores.update({f"dice_{name}": float(d) for name, d in zip(self.names[1:], dice)})
        return scores


class MaskAP:
    """COCO-style mask average precision over the thing classes."""

    def __init__(self, thing_classes: tuple[int, ...]) -> None:
        self.classes = thing_classes
        self.scores: dict[int, list[np.ndarray]] = {c: [] for c in thing_classes}
        self.matched: dict[int, list[np.ndarray]] = {c: [] for c in thing_classes}  # [T, D] per image
        self.num_truth = dict.fromkeys(thing_classes, 0)

    def add(self, pred: Instances, target: Instances) -> None:
        if pred.scores is None:
            raise ValueError("MaskAP.add: the predicted instances have no scores")
        for c in self.classes:
            d = torch.nonzero(pred.labels == c).flatten()
            d = d[torch.argsort(pred.scores[d], descending=True, stable=True)][:MAX_DETECTIONS]
            g = torch.nonzero(target.labels == c).flatten()
            ious = mask_iou(pred.masks[d], target.masks[g]).cpu().numpy()
            self.scores[c].append(pred.scores[d].cpu().numpy())
            self.matched[c].append(np.stack([self._match(ious, t) for t in IOU_THRESHOLDS]))
            self.num_truth[c] += len(g)

    @staticmethod
    def _match(ious: np.ndarray, threshold: float) -> np.ndarray:
        """Detections (rows, in score order) that match a still unmatched ground truth at ``threshold``;
        each takes the unmatched one it overlaps most, the last of equal ones as pycocotools does (a
        detection covering two equal objects has IoU 0.5 with both)."""
        free = np.ones(ious.shape[1], dtype=bool)
        hit = np.zeros(ious.shape[0], dtype=bool)
        for i, row in enumerate(ious):
            candidates = np.flatnonzero(free & (row >= threshold))[::-1]
            if candidates.size:
                free[candidates[row[candidates].argmax()]] = False
                hit[i] = True
        return hit

    def compute(self) -> dict[str, float]:
        ap = []  # [classes, thresholds]
        for c in self.classes:
            if self.num_truth[c] == 0:
                continue
            scores = np.concatenate(self.scores[c])
            if scores.size == 0:
                ap.append([0.0] * len(IOU_THRESHOLDS))
                continue
            order = np.argsort(-scores, kind="mergesort")
            hits = np.concatenate(self.matched[c], axis=1)[:, order]
            tp = np.cumsum(hits, axis=1)
            fp = np.cumsum(~hits, axis=1)
            per_threshold = []
            for tp_t, fp_t in zip(tp, fp):
                recall = tp_t / self.num_truth[c]
                precision = np.maximum.accumulate((tp_t / np.maximum(tp_t + fp_t, 1))[::-1])[::-1]
                index = np.searchsorted(recall, RECALL_POINTS, side="left")
                sampled = np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0)
                per_threshold.append(sampled.mean())
            ap.append(per_threshold)
        if not ap:
            return {"mask_AP": float("nan"), "mask_AP50": float("nan")}
        table = np.asarray(ap)
        return {"mask_AP": float(table.mean()), "mask_AP50": float(table[:, 0].mean())}


class PanopticQuality:
    """PQ, SQ and RQ over the foreground classes (things and stuff)."""

    def __init__(self, num_classes: int) -> None:
        self.iou_sum = np.zeros(num_classes)
        self.tp, self.fp, self.fn = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))

    def add(self, pred: PanopticResult, target: PanopticResult) -> None:
        n_pred = max((s.id for s in pred.segments), default=0) + 1
        n_target = max((s.id for s in target.segments), default=0) + 1
        pairs = target.ids.long().flatten() * n_pred + pred.ids.long().flatten()
        overlap = torch.bincount(pairs.cpu(), minlength=n_target * n_pred).reshape(n_target, n_pred).numpy()
        matched = set()
        for g in target.segments:
            # Segments of one map do not overlap, so at most one prediction can pass IoU > 0.5.
            for p in pred.segments:
                iou = overlap[g.id, p.id] / (g.area + p.area - overlap[g.id, p.id])
                if p.label == g.label and iou > 0.5:
                    matched.add(p.id)
                    self.tp[g.label] += 1
                    self.iou_sum[g.label] += iou
                    break
            else:
                self.fn[g.label] += 1
        for p in pred.segments:
            if p.id not in matched:
                self.fp[p.label] += 1

    def compute(self) -> dict[str, float]:
        seen = (self.tp + self.fp + self.fn) > 0
        seen[0] = False
        if not seen.any():
            return {"PQ": float("nan"), "SQ": float("nan"), "RQ": float("nan")}
        tp, fp, fn, iou = self.tp[seen], self.fp[seen], self.fn[seen], self.iou_sum[seen]
        denominator = tp + 0.5 * fp + 0.5 * fn
        sq = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
        return {"PQ": float((iou / denominator).mean()), "SQ": float(sq.mean()), "RQ": float((tp / denominator).mean())}


class Evaluator2D:
    """Scores a model's predictions against label maps: pixel metrics always, mask AP when predictions
    carry instances, PQ when they carry a panoptic map."""

    def __init__(self, classes: ClassSpec) -> None:
        self.classes = classes
        self.pixels = PixelScores(classes.names)
        self.ap = MaskAP(classes.things)
        self.pq = PanopticQuality(classes.num_classes)
        self.has_instances = self.has_panoptic = False

    def add(self, prediction: Prediction2D, label: torch.Tensor) -> None:
        """One image: its prediction and its [H, W] map of dataset label values."""
        label = label.cpu()
        semantic = semantic_target(label, self.classes)
        self.pixels.add(prediction.labels.cpu(), semantic)
        if prediction.instances is None and prediction.panoptic is None:
            return
        truth = instance_target(label, self.classes)
        if prediction.instances is not None:
            self.has_instances = True
            self.ap.add(prediction.instances.to("cpu"), truth)
        if prediction.panoptic is not None:
            self.has_panoptic = True
            pred = PanopticResult(prediction.panoptic.ids.cpu(), prediction.panoptic.segments)
            self.pq.add(pred, panoptic_target(semantic, truth, self.classes))

    def compute(self) -> dict[str, float]:
        scores = self.pixels.compute()
        if self.has_instances:
            scores.update(self.ap.compute())
        if self.has_panoptic:
            scores.update(self.pq.compute())
        return scores
