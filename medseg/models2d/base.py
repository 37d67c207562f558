"""The types of the one contract every 2D model follows (the model itself is in ``model``), so semantic,
instance and panoptic models train in the same loop and are scored by the same code.

Training: ``training_step(batch)`` returns named loss terms (their sum is what is minimised).
Inference: ``predict(images)`` returns one ``Prediction2D`` per image: ``semantic`` class scores are always
filled (instance models paste their masks), ``instances`` and ``panoptic`` only by models that make them.
Class indices everywhere are those of ``ClassSpec.names`` (0 is background).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from medseg.errors import MedsegError


@dataclass(frozen=True)
class ClassSpec:
    """The classes the 2D models work with: the dataset's classes after grouping. ``lookup[v]`` is the
    class of dataset label value ``v``; ``things`` and ``stuff`` split the foreground classes."""

    names: tuple[str, ...]
    things: tuple[int, ...]
    stuff: tuple[int, ...]
    lookup: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_config(cls, dataset_classes: list[str], groups: list[list[str]], stuff_classes: list[str]) -> ClassSpec:
        """Apply ``compare.groups`` and ``compare.stuff_classes`` to the dataset's class names."""
        foreground = list(dataset_classes[1:])
        group_of: dict[str, str] = {}
        for group in groups:
            if len(group) < 2:
                raise MedsegError(f"config key 'compare.groups': {group} needs a name and at least one class to merge")
            name, members = group[0], group[1:]
            if name in foreground and name not in members:
                raise MedsegError(f"config key 'compare.groups': group name '{name}' is already a dataset class")
            for member in members:
                if member not in foreground:
                    raise MedsegError(f"config key 'compare.groups': '{member}' is not a dataset class "
                                      f"({', '.join(foreground)})")
                if member in group_of:
                    raise MedsegError(f"config key 'compare.groups': '{member}' is in more than one group")
                group_of[member] = name
        names = [dataset_classes[0]]
        lookup = [0]
        for source in foreground:
            merged = group_of.get(source, source)
            if merged not in names:
                names.append(merged)
            lookup.append(names.index(merged))
        unknown = [s for s in stuff_classes if s not in names[1:]]
        if unknown or len(set(stuff_classes)) != len(stuff_classes):
            raise MedsegError(f"config key 'compare.stuff_classes': expected distinct names among "
                              f"{', '.join(names[1:])}, got {stuff_classes}")
        stuff = tuple(names.index(s) for s in stuff_classes)
        things = tuple(k for k in range(1, len(names)) if k not in stuff)
        return cls(tuple(names), things, tuple(sorted(stuff)), tuple(lookup))


@dataclass
class Instances:
    """Objects in one image: ``masks`` [N, H, W] bool, ``labels`` [N] int64 class indices, ``boxes``
    [N, 4] float (x0, y0, x1, y1 on pixel edges: a one-pixel mask has a 1x1 box) and ``scores`` [N]
    (None for ground truth)."""

    masks: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Instances:
        scores = None if self.scores is None else self.scores.to(device)
        return Instances(self.masks.to(device), self.labels.to(device), self.boxes.to(device), scores)


@dataclass
class Segment:
    """One segment of a panoptic map: an instance of a thing class (with its detection score) or the
    region of a stuff class."""

    id: int
    label: int
    is_thing: bool
    area: int
    score: float | None = None


@dataclass
class PanopticResult:
    """``ids`` [H, W] int32: the segment id of each pixel, 0 where no segment; ``segments`` describe them."""

    ids: torch.Tensor
    segments: list[Segment] = field(default_factory=list)

    def to(self, device: torch.device | str) -> PanopticResult:
        return PanopticResult(self.ids.to(device), self.segments)

    def class_scores(self, num_classes: int) -> torch.Tensor:
        """[K, H, W]: each segment's score (1 for stuff) in its class channel; background is 1 where no
        segment is. The argmax is the class of every pixel."""
        scores = torch.zeros(num_classes, *self.ids.shape, device=self.ids.device)
        scores[0] = (self.ids == 0).float()
        for s in self.segments:
            scores[s.label][self.ids == s.id] = 1.0 if s.score is None else s.score
        return scores


@dataclass
class Prediction2D:
    """A model's answer for one image. ``semantic`` [K, H, W] class scores (argmax = label map);
    ``instances`` the detections (masks, labels, scores, boxes) or None; ``panoptic`` or None."""

    semantic: torch.Tensor
    instances: Instances | None = None
    panoptic: PanopticResult | None = None

    @property
    def labels(self) -> torch.Tensor:
        return self.semantic.argmax(0)

    def to(self, device: torch.device | str) -> Prediction2D:
        return Prediction2D(self.semantic.to(device), None if self.instances is None else self.instances.to(device),
                            None if self.panoptic is None else self.panoptic.to(device))


@dataclass
class Batch2D:
    """Training input: ``images`` [B, 1, H, W], ``semantic`` [B, H, W] int64 class maps and the
    ground-truth ``instances`` of each image (of the thing classes), None for models that need none."""

    images: torch.Tensor
    semantic: torch.Tensor
    instances: list[Instances] | None

    def to(self, device: torch.device | str) -> Batch2D:
        instances = None if self.instances is None else [i.to(device) for i in self.instances]
        return Batch2D(self.images.to(device), self.semantic.to(device), instances)
