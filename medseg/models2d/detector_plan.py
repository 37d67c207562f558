"""Detector settings planned from the slices the models train on: the instances of seeded draws of the
training sampler (so the statistics weigh slices as training does) go to ``planning/detection.py``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sized
from typing import Any, Protocol

import numpy as np
import torch

from medseg.config import Compare2DConfig
from medseg.models2d.base import ClassSpec
from medseg.models2d.maskrcnn import PLANNED_KEYS
from medseg.models2d.targets import instance_target
from medseg.planning.detection import FALLBACK, InstanceStats, plan_detection
from medseg.planning.rules import Planned

PLANNING_DRAWS = 2000  # training slices drawn to measure the instances


class SliceDataset(Sized, Protocol):
    def __getitem__(self, index: int) -> dict: ...


def sampled_instance_stats(dataset: SliceDataset, classes: ClassSpec, draws: int = PLANNING_DRAWS,
                           seed: int = 0) -> InstanceStats:
    """Box sizes of the thing instances in ``draws`` training slices (the dataset's own random sampling,
    seeded), and the number of instances of each slice that holds any."""
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=seed)
    sizes, per_slice = [], []
    for draw in range(draws):
        label = dataset[draw % len(dataset)]["label"]
        instances = instance_target(torch.as_tensor(label)[0], classes)
        if len(instances.boxes):
            boxes = instances.boxes
            sizes.append(torch.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], dim=1))
            per_slice.append(len(boxes))
    box_sizes = torch.cat(sizes).numpy() if sizes else np.zeros((0, 2))
    return InstanceStats(box_sizes=box_sizes, per_slice=np.asarray(per_slice))


def plan_detectors(settings: Compare2DConfig, dataset: SliceDataset,
                   classes: ClassSpec) -> tuple[Compare2DConfig, dict[str, Planned]]:
    """``settings`` with every null detector key planned from the training slices, and the plan of those
    keys (values the user set are kept and left out of the plan)."""
    unset = [key for key in PLANNED_KEYS if getattr(settings, key) is None]
    if not unset:
        return settings, {}
    plan = plan_detection(sampled_instance_stats(dataset, classes))
    chosen = {key: plan[f"compare.{key}"] for key in unset}
    values: dict[str, Any] = {key: p.value for key, p in chosen.items()}
    return dataclasses.replace(settings, **values), {f"compare.{key}": p for key, p in chosen.items()}


def provisional(settings: Compare2DConfig) -> Compare2DConfig:
    """``settings`` with the unplanned detector keys at their fallback values: enough to build every model
    and so check the other settings before the data is read."""
    values: dict[str, Any] = {key: FALLBACK[f"compare.{key}"] for key in PLANNED_KEYS if getattr(settings, key) is None}
    return dataclasses.replace(settings, **values)
