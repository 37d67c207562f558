"""Panoptic FPN (Kirillov et al., CVPR 2019) behind the 2D contract: Mask R-CNN plus a semantic branch on
the same FPN features, merged into one panoptic map by ``merge_panoptic``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import Compare2DConfig, Config
from medseg.losses import build_loss
from medseg.models2d.base import Batch2D, ClassSpec, Prediction2D
from medseg.models2d.maskrcnn import (
    build_detector,
    detections_to_instances,
    detector_targets,
    require_things,
)
from medseg.models2d.merge import merge_panoptic
from medseg.models2d.model import MODELS_2D, Model2D

HEAD_CHANNELS = 128
SEMANTIC_LOSS_WEIGHT = 0.5  # detectron2's Panoptic FPN setting (SEM_SEG_HEAD.LOSS_WEIGHT)
SEMANTIC_LEVELS = ("0", "1", "2", "3")  # torchvision's names of P2-P5 (strides 4 to 32)


class SemanticFPNHead(nn.Module):
    """The semantic branch: each of P2..P5 goes through 3x3 conv + GroupNorm + ReLU stages, each followed
    by 2x upsampling except at P2, until it reaches 1/4 scale; the sum is classified by a 1x1 conv and
    upsampled to the image. It predicts every class; the merge takes only the stuff classes from it."""

    def __init__(self, num_classes: int, fpn_channels: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        for level in range(len(SEMANTIC_LEVELS)):
            stages: list[nn.Module] = []
            for k in range(max(level, 1)):
                channels_in = fpn_channels if k == 0 else HEAD_CHANNELS
                stages += [nn.Conv2d(channels_in, HEAD_CHANNELS, 3, padding=1, bias=False),
                           nn.GroupNorm(32, HEAD_CHANNELS), nn.ReLU(inplace=True)]
                if level > 0:
                    stages.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.levels.append(nn.Sequential(*stages))
        self.predictor = nn.Conv2d(HEAD_CHANNELS, num_classes, 1)

    def forward(self, features: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = sum(stage(features[name]) for stage, name in zip(self.levels, SEMANTIC_LEVELS))
        return F.interpolate(self.predictor(x), size=size, mode="bilinear", align_corners=False)


class PanopticNetwork(nn.Module):
    """Mask R-CNN and the semantic branch on the same FPN features, in one ``forward`` so that DDP sees
    every pass: in training mode it returns the loss terms, in eval mode the detections and the semantic
    logits [B, K, H, W]."""

    def __init__(self, settings: Compare2DConfig, classes: ClassSpec) -> None:
        super().__init__()
        self.detector = build_detector(settings, len(classes.things))
        self.semantic_head = SemanticFPNHead(classes.num_classes, settings.fpn_channels)

    def _semantic_logits(self, features: dict[str, torch.Tensor], padded: torch.Size, size: tuple[int, int],
                         original: tuple[int, int]) -> torch.Tensor:
        logits = self.semantic_head(features, padded[-2:])[..., : size[0], : size[1]]
        return logits if tuple(size) == tuple(original) else F.interpolate(logits, size=original, mode="bilinear")

    def forward(
        self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[dict[str, torch.Tensor] | list[dict[str, torch.Tensor]], torch.Tensor]:
        """Training: (loss terms, semantic logits); eval: (detections per image, semantic logits)."""
        d = self.detector
        original = (int(images.shape[-2]), int(images.shape[-1]))
        image_list, targets = d.transform(list(images), targets)
        features = d.backbone(image_list.tensors)
        proposals, rpn_losses = d.rpn(image_list, features, targets)
        detections, roi_losses = d.roi_heads(features, proposals, image_list.image_sizes, targets)
        logits = self._semantic_logits(features, image_list.tensors.shape, image_list.image_sizes[0], original)
        if self.training:
            return {**rpn_losses, **roi_losses}, logits
        return d.transform.postprocess(detections, image_list.image_sizes, [original] * len(images)), logits


class PanopticFPN(Model2D):
    """Losses are the detector's plus the semantic branch's ``semantic_loss``: ``train.loss``, the loss of
    the semantic models, so that every model's per-pixel part learns from the same loss (the paper uses
    plain cross-entropy). ``semantic`` of a prediction is the panoptic map's classes; ``instances`` are
    all detections (for mask AP), ``panoptic`` the merged map."""

    def __init__(self, classes: ClassSpec, config: Config, semantic_loss: nn.Module) -> None:
        super().__init__(classes, config)
        self.network = PanopticNetwork(config.compare, classes)
        self.semantic_loss = semantic_loss

    def losses(self, batch: Batch2D) -> dict[str, torch.Tensor]:
        detector_losses, logits = self.network(batch.images, detector_targets(batch, self.classes))
        semantic = SEMANTIC_LOSS_WEIGHT * self.semantic_loss(logits, batch.semantic[:, None])
        return {**detector_losses, "loss_semantic": semantic}

    def infer(self, images: torch.Tensor) -> list[Prediction2D]:
        s = self.settings
        detections, semantic = self.network(images)
        predictions = []
        for detection, labels in zip(detections, semantic.argmax(1)):
            instances = detections_to_instances(detection, self.classes, s.mask_threshold)
            panoptic = merge_panoptic(instances, labels, self.classes.stuff, s.score_threshold,
                                      s.overlap_threshold, s.stuff_area_limit)
            predictions.append(Prediction2D(panoptic.class_scores(self.classes.num_classes), instances, panoptic))
        return predictions


@MODELS_2D.register("panoptic")
def _panoptic(config: Config, classes: ClassSpec) -> PanopticFPN:
    require_things(classes, "panoptic")
    return PanopticFPN(classes, config, build_loss(config.train.loss, class_weights=config.train.class_weights,
                                                       num_classes=classes.num_classes))
