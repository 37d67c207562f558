"""Targets for every 2D model from one label map, so all models learn from and are scored on the same
ground truth: the class map, the instances of the thing classes and the panoptic map.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchvision.ops import masks_to_boxes

from medseg.models2d.base import Batch2D, ClassSpec, Instances, PanopticResult, Segment

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def semantic_target(label: torch.Tensor, classes: ClassSpec) -> torch.Tensor:
    """Dataset label values (any shape) -> class indices (int64), groups merged."""
    lookup = torch.tensor(classes.lookup, dtype=torch.int64, device=label.device)
    return lookup[label.long()]


def instance_target(label: torch.Tensor, classes: ClassSpec) -> Instances:
    """The instances in a [H, W] map of dataset label values: each 8-connected component of each thing
    class's source label value. Sources merged by a group stay apart, so the two parotids are two
    instances of Parotid even where they touch. An empty slice gives zero instances."""
    values = label.cpu().numpy()
    masks, labels = [], []
    for value in np.unique(values):
        cls = classes.lookup[int(value)]
        if cls not in classes.things:
            continue
        components, count = ndimage.label(values == value, structure=_EIGHT_CONNECTED)
        masks += [components == k for k in range(1, count + 1)]
        labels += [cls] * count
    masks_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, *values.shape, dtype=torch.bool)
    boxes = masks_to_boxes(masks_t) + torch.tensor([0.0, 0.0, 1.0, 1.0])  # inclusive max -> pixel edge
    return Instances(masks_t.to(label.device), torch.tensor(labels, dtype=torch.int64, device=label.device),
                     boxes.to(label.device))


def panoptic_target(semantic: torch.Tensor, instances: Instances, classes: ClassSpec) -> PanopticResult:
    """The ground-truth panoptic map of one image: one segment per instance, one per stuff class present."""
    ids = torch.zeros(semantic.shape, dtype=torch.int32, device=semantic.device)
    segments: list[Segment] = []
    regions = [(m, int(c), True) for m, c in zip(instances.masks, instances.labels)]
    regions += [(semantic == s, s, False) for s in classes.stuff]
    for mask, label, is_thing in regions:
        area = int(mask.sum())
        if area:
            ids[mask] = len(segments) + 1
            segments.append(Segment(len(segments) + 1, label, is_thing, area))
    return PanopticResult(ids, segments)


def make_batch(images: torch.Tensor, labels: torch.Tensor, classes: ClassSpec, with_instances: bool = True) -> Batch2D:
    """Images [B, 1, H, W] and dataset label maps [B, H, W] -> the batch every model trains on; the
    instance targets (connected components, on the CPU) only ``with_instances``."""
    instances = [instance_target(lab, classes) for lab in labels] if with_instances else None
    return Batch2D(images, semantic_target(labels, classes), instances)
