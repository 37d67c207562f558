"""Mask R-CNN (He et al. 2017) behind the 2D contract: torchvision's Mask R-CNN on a ResNet-18/34/50 FPN
with BatchNorm or GroupNorm, no pretrained weights, one box class per thing class, at the slice's own size."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from medseg.config import FPN_LEVELS, Compare2DConfig, Config
from medseg.errors import MedsegError
from medseg.models2d.base import Batch2D, ClassSpec, Instances, Prediction2D
from medseg.models2d.merge import paste_instances
from medseg.models2d.model import MODELS_2D, Model2D

MASK_RCNN_WIDTH = 256  # the paper's FPN and head width; compare.fpn_channels may narrow both
BOX_REPRESENTATION = 1024
GROUPS = 32  # GroupNorm groups (Wu and He 2018), fewer for narrow layers
# torchvision's defaults suit 800-pixel photos with dozens of objects; a slice holds a handful of organs.
# Fewer proposals (and fewer sampled RoIs, now planned) made a training step on 8 slices of 96x96 pixels
# 2.8x faster on one CPU thread; with them and 20 instead of 100 detections per image, inference ran
# 5.6x faster.
SMALL_IMAGE_SETTINGS = {
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
}
POOLED_LEVELS = ["0", "1", "2", "3"]  # P2-P5, as torchvision pools them
# detectron2's adaptive RoIAlign sampling (ROIAlignV2, sampling_ratio 0): ceil(RoI size / output size)
# points per bin. torchvision's fixed 2x2 points made RoIAlign's backward, which runs on one CPU thread,
# 30% of a Mask R-CNN step on 96x96 slices; organ sections a few feature cells wide need one point.
ROI_SAMPLING_RATIO = 0
PLANNED_KEYS = ("anchor_sizes", "aspect_ratios", "rpn_samples_per_image", "roi_samples_per_image")


def _norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """``compare.backbone_norm``: BatchNorm, or GroupNorm, which trains from scratch with small batches."""
    if kind == "group":
        return lambda channels: nn.GroupNorm(min(GROUPS, channels // 4), channels)
    return nn.BatchNorm2d


def build_detector(settings: Compare2DConfig, num_things: int) -> MaskRCNN:
    """torchvision's Mask R-CNN on a ResNet-FPN (``compare.backbone``) for 1-channel slices of
    ``compare.slice_size``, with no pretrained weights.

    The default transform would rescale a 128-pixel slice to 800 pixels; min/max size equal to the
    slice keeps it as it is, and ``compare.detector_scale`` enlarges it (organ sections a few pixels
    wide then span more than one cell of the finest FPN level); detections come back at slice size.
    The anchors (``compare.anchor_sizes``, ``compare.aspect_ratios``) and the
    anchors and proposals sampled per image replace the values made for 800-pixel photos; the
    workflow plans them from the training slices before any detector is built for training.
    At most ``compare.detections_per_image`` detections are kept per image. ``compare.maskrcnn_v2`` takes
    the heads of torchvision's ``maskrcnn_resnet50_fpn_v2`` (two RPN convolutions, normalised box and
    mask heads). The first convolution takes one channel and the images pass unnormalised, as they reach
    the semantic networks. ResNet-50 with BatchNorm and the v1 heads is ``maskrcnn_resnet50_fpn``.
    """
    missing = [f"compare.{key}" for key in PLANNED_KEYS if getattr(settings, key) is None]
    if missing:
        raise ValueError(f"build_detector: {', '.join(missing)} not planned yet (planning/detection.py)")
    assert settings.anchor_sizes is not None and settings.aspect_ratios is not None  # for mypy
    norm = _norm_layer(settings.backbone_norm)
    body = getattr(resnet, settings.backbone)(weights=None, norm_layer=norm)
    body.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    # What torchvision's builders make of it: C2-C5 into an FPN plus a max-pooled P6; v2 normalises the
    # FPN's convolutions too.
    stage2 = body.inplanes // 8
    channels = settings.fpn_channels
    backbone = BackboneWithFPN(body, {f"layer{k}": str(k - 1) for k in range(1, 5)},
                               [stage2 * 2 ** (k - 1) for k in range(1, 5)], channels,
                               extra_blocks=LastLevelMaxPool(), norm_layer=norm if settings.maskrcnn_v2 else None)
    # One anchor size per FPN level, as many anchors per location as torchvision's default.
    scale = settings.detector_scale
    anchors = AnchorGenerator(tuple((round(s * scale),) for s in settings.anchor_sizes),
                              (tuple(settings.aspect_ratios),) * FPN_LEVELS)
    heads: dict[str, nn.Module] = {}
    if settings.maskrcnn_v2:
        heads = {
            "rpn_head": RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=2),
            "box_head": FastRCNNConvFCHead((channels, 7, 7), [channels] * 4, [BOX_REPRESENTATION], norm_layer=norm),
            "mask_head": MaskRCNNHeads(channels, [channels] * 4, 1, norm_layer=norm),
        }
    elif channels != MASK_RCNN_WIDTH:  # torchvision's v1 heads, as wide as the FPN
        heads = {"box_head": TwoMLPHead(channels * 7 * 7, BOX_REPRESENTATION),
                 "mask_head": MaskRCNNHeads(channels, [channels] * 4, 1)}
    classes: int | None = 1 + num_things
    if channels != MASK_RCNN_WIDTH:  # torchvision builds the predictors only at width 256
        heads["mask_predictor"] = MaskRCNNPredictor(channels, channels, 1 + num_things)
        heads["box_predictor"] = FastRCNNPredictor(BOX_REPRESENTATION, 1 + num_things)
        classes = None
    return MaskRCNN(backbone, num_classes=classes, min_size=round(scale * min(settings.slice_size)),
                    max_size=round(scale * max(settings.slice_size)), image_mean=[0.0], image_std=[1.0],
                    rpn_anchor_generator=anchors, box_detections_per_img=settings.detections_per_image,
                    rpn_batch_size_per_image=settings.rpn_samples_per_image,
                    box_batch_size_per_image=settings.roi_samples_per_image,
                    box_roi_pool=MultiScaleRoIAlign(POOLED_LEVELS, 7, sampling_ratio=ROI_SAMPLING_RATIO),
                    mask_roi_pool=MultiScaleRoIAlign(POOLED_LEVELS, 14, sampling_ratio=ROI_SAMPLING_RATIO),
                    **SMALL_IMAGE_SETTINGS, **heads)


def detector_targets(batch: Batch2D, classes: ClassSpec) -> list[dict[str, torch.Tensor]]:
    """Ground-truth instances in torchvision's form, thing classes numbered 1..T."""
    if batch.instances is None:
        raise ValueError("detector_targets: the batch has no instance targets (make_batch with_instances=True)")
    index = torch.zeros(classes.num_classes, dtype=torch.int64, device=batch.images.device)
    index[list(classes.things)] = torch.arange(1, len(classes.things) + 1, device=index.device)
    return [{"boxes": inst.boxes, "labels": index[inst.labels], "masks": inst.masks.to(torch.uint8)}
            for inst in batch.instances]


def detections_to_instances(detection: dict[str, torch.Tensor], classes: ClassSpec, mask_threshold: float) -> Instances:
    """torchvision's output for one image -> ``Instances`` with binary masks and class indices."""
    things = torch.tensor(classes.things, dtype=torch.int64, device=detection["labels"].device)
    return Instances(detection["masks"][:, 0] >= mask_threshold, things[detection["labels"] - 1],
                     detection["boxes"], detection["scores"])


class MaskRCNN2D(Model2D):
    """Detections of the thing classes; the semantic map pastes those scoring at least
    ``compare.score_threshold``, higher scores winning overlaps. Stuff classes are never predicted."""

    def __init__(self, classes: ClassSpec, config: Config) -> None:
        super().__init__(classes, config)
        self.network = build_detector(config.compare, len(classes.things))

    def losses(self, batch: Batch2D) -> dict[str, torch.Tensor]:
        return self.network(list(batch.images), detector_targets(batch, self.classes))

    def infer(self, images: torch.Tensor) -> list[Prediction2D]:
        predictions = []
        for detection in self.network(list(images)):
            instances = detections_to_instances(detection, self.classes, self.settings.mask_threshold)
            pasted = paste_instances(instances, self.settings.score_threshold, overlap_threshold=1.0)
            predictions.append(Prediction2D(pasted.class_scores(self.classes.num_classes), instances))
        return predictions


def require_things(classes: ClassSpec, model: str) -> None:
    if not classes.things:
        raise MedsegError(f"config key 'compare.stuff_classes': model '{model}' needs at least one thing class, "
                          f"but every class is stuff")


@MODELS_2D.register("maskrcnn")
def _maskrcnn(config: Config, classes: ClassSpec) -> MaskRCNN2D:
    require_things(classes, "maskrcnn")
    return MaskRCNN2D(classes, config)
