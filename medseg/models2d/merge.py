"""Instances and a semantic map -> one panoptic map, the Panoptic FPN way (Kirillov et al. 2019; the
rule of detectron2's ``combine_semantic_and_instance_outputs``)."""

from __future__ import annotations

import torch

from medseg.models2d.base import Instances, PanopticResult, Segment


def paste_instances(instances: Instances, score_threshold: float, overlap_threshold: float) -> PanopticResult:
    """Instances in descending score order, those under ``score_threshold`` dropped; an instance more than
    ``overlap_threshold`` of whose mask is already taken is dropped, otherwise it takes its free pixels.
    ``overlap_threshold=1`` keeps every instance with a pixel left: higher scores win contested pixels."""
    if instances.scores is None:
        raise ValueError("paste_instances: the instances have no scores (detections have, ground truth has not)")
    ids = torch.zeros(instances.masks.shape[-2:], dtype=torch.int32, device=instances.masks.device)
    segments: list[Segment] = []
    for i in torch.argsort(instances.scores, descending=True, stable=True).tolist():
        score = float(instances.scores[i])
        if score < score_threshold:
            break
        mask = instances.masks[i]
        area = int(mask.sum())
        if area == 0 or int((mask & (ids > 0)).sum()) / area > overlap_threshold:
            continue
        mask = mask & (ids == 0)
        if not mask.any():
            continue
        segments.append(Segment(len(segments) + 1, int(instances.labels[i]), True, int(mask.sum()), score))
        ids[mask] = segments[-1].id
    return PanopticResult(ids, segments)


def merge_panoptic(
    instances: Instances,
    semantic_labels: torch.Tensor,
    stuff_classes: tuple[int, ...],
    score_threshold: float,
    overlap_threshold: float,
    stuff_area_limit: int,
) -> PanopticResult:
    """Things first (``paste_instances``), then each stuff class of the semantic argmax ``semantic_labels``
    [H, W] on the pixels still free, kept when it covers at least ``stuff_area_limit`` pixels. Background
    and thing classes of the semantic map make no segments."""
    result = paste_instances(instances, score_threshold, overlap_threshold)
    for label in stuff_classes:
        mask = (semantic_labels == label) & (result.ids == 0)
        area = int(mask.sum())
        if area == 0 or area < stuff_area_limit:
            continue
        result.segments.append(Segment(len(result.segments) + 1, label, False, area))
        result.ids[mask] = result.segments[-1].id
    return result
