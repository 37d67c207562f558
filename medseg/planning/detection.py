"""Detector settings planned from the instances in the training slices: anchor sizes and shapes, and how
many anchors and proposals each image samples for the losses.

torchvision's defaults are made for 800-pixel photographs with dozens of objects; an axial slice of a
CT holds a handful of organ sections of a few to a hundred pixels. Anchors far from the objects' sizes
leave the RPN with few or no positive anchors, and sampling 256 anchors and 512 proposals per image
around four objects fills the losses with easy negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medseg.config import FPN_LEVELS
from medseg.planning.rules import Planned

FPN_STRIDES = tuple(4 * 2**level for level in range(FPN_LEVELS))  # P2-P5 and the max-pooled P6
# Anchors (RPN) and proposals (RoI heads) sampled per ground-truth instance of a busy slice. A quarter
# of the proposals may be positives, and the mask head's four convolutions run on every positive: on a
# CPU they made most of a step at 32 proposals per instance.
RPN_SAMPLES_PER_INSTANCE, ROI_SAMPLES_PER_INSTANCE = 32, 16
MIN_RPN_SAMPLES, MAX_RPN_SAMPLES = 64, 256  # torchvision's 256 is the ceiling
MIN_ROI_SAMPLES, MAX_ROI_SAMPLES = 32, 512  # torchvision's 512 is the ceiling
MIN_ANCHOR = 4.0  # pixels: a smaller anchor has no sub-pixel meaning
ASPECT_LIMIT = 4.0
# With nothing to plan from (and to check settings before the data is read): torchvision's anchor
# shapes and sample counts, anchors two strides wide.
FALLBACK = {"compare.anchor_sizes": [2 * stride for stride in FPN_STRIDES], "compare.aspect_ratios": [0.5, 1.0, 2.0],
            "compare.rpn_samples_per_image": MAX_RPN_SAMPLES, "compare.roi_samples_per_image": MAX_ROI_SAMPLES}


@dataclass
class InstanceStats:
    """Box heights and widths (pixels, [N, 2]) of every thing instance in the training slices that hold
    one, and how many instances each of those slices holds."""

    box_sizes: np.ndarray
    per_slice: np.ndarray


def anchor_sizes(stats: InstanceStats) -> Planned:
    """One anchor size per FPN level, geometric from the 5th to the 95th percentile of the instances'
    scale (square root of box area), each at least its level's stride so the anchors tile the image
    without gaps between their centres."""
    scales = np.sqrt(stats.box_sizes.prod(axis=1))
    low = max(float(np.percentile(scales, 5)), MIN_ANCHOR)
    high = max(float(np.percentile(scales, 95)), 2 * low)
    sizes = np.geomspace(low, high, len(FPN_STRIDES))
    planned = [int(max(round(s), stride)) for s, stride in zip(sizes, FPN_STRIDES)]
    return Planned(planned, f"instance scales {low:.0f}-{high:.0f} px (5th-95th percentile of "
                            f"{len(scales)} instances), each at least its level's stride")


def aspect_ratios(stats: InstanceStats) -> Planned:
    """Three anchor shapes (height / width): the 10th percentile, square and the 90th percentile of the
    instances' box shapes, at least 1.5x from square so that three distinct shapes remain."""
    ratios = stats.box_sizes[:, 0] / stats.box_sizes[:, 1]
    tall = float(np.clip(np.percentile(ratios, 90), 1.5, ASPECT_LIMIT))
    wide = float(np.clip(np.percentile(ratios, 10), 1 / ASPECT_LIMIT, 1 / 1.5))
    return Planned([round(wide, 2), 1.0, round(tall, 2)],
                   "10th and 90th percentile of the instances' height/width, and square")


def _samples(per_slice: np.ndarray, per_instance: int, low: int, high: int) -> Planned:
    busiest = float(np.percentile(per_slice, 95))
    return Planned(int(np.clip(per_instance * busiest, low, high)),
                   f"{per_instance} per instance of a busy slice ({busiest:.0f}: the 95th percentile)")


def rpn_samples(stats: InstanceStats) -> Planned:
    """Anchors sampled per image for the RPN's losses, from the number of instances a slice holds."""
    return _samples(stats.per_slice, RPN_SAMPLES_PER_INSTANCE, MIN_RPN_SAMPLES, MAX_RPN_SAMPLES)


def roi_samples(stats: InstanceStats) -> Planned:
    """Proposals sampled per image for the box and mask heads' losses, likewise."""
    return _samples(stats.per_slice, ROI_SAMPLES_PER_INSTANCE, MIN_ROI_SAMPLES, MAX_ROI_SAMPLES)


def plan_detection(stats: InstanceStats) -> dict[str, Planned]:
    """The planned ``compare`` keys. With no instance in the training slices, torchvision's anchor
    shapes and sample counts at two strides per anchor (there is nothing to detect or to plan from)."""
    if not len(stats.box_sizes):
        reason = "no instance in the training slices"
        return {key: Planned(value, reason) for key, value in FALLBACK.items()}
    return {"compare.anchor_sizes": anchor_sizes(stats), "compare.aspect_ratios": aspect_ratios(stats),
            "compare.rpn_samples_per_image": rpn_samples(stats),
            "compare.roi_samples_per_image": roi_samples(stats)}
