"""Axial slices of preprocessed volumes: what every model of a 2D comparison trains and is scored on.

Volumes go through the same preprocessing as the 3D strategies (``medseg.data.transforms``), are padded
or cropped in plane to ``compare.slice_size`` and kept in memory; slices are cut along the last array
axis, which is axial after reorientation to RAS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import Compose, ResizeWithPadOrCropd

from medseg.config import Config
from medseg.data.datasets import Case
from medseg.data.transforms import preprocessing


@dataclass
class SliceVolume:
    """One preprocessed case: ``image`` [H, W, Z] float32, ``label`` [H, W, Z] dataset label values
    (uint8), and ``foreground`` the indices of the slices holding any labelled pixel."""

    case_id: str
    image: torch.Tensor
    label: torch.Tensor
    foreground: np.ndarray


def load_volumes(config: Config, cases: list[Case], log: Callable[[str], None] = print) -> list[SliceVolume]:
    """Preprocess ``cases`` with a planned config; user errors in the files surface as ``MedsegError``."""
    keys = ("image", "label")
    transform = Compose(preprocessing(config.data) +
                        [ResizeWithPadOrCropd(keys, spatial_size=(*config.compare.slice_size, -1))])
    volumes = []
    for i, case in enumerate(cases, start=1):
        d = transform({"image": str(case.image), "label": str(case.label)})
        image, label = (torch.as_tensor(d[k]).as_subclass(torch.Tensor)[0] for k in keys)
        foreground = torch.nonzero(label.flatten(0, 1).any(0)).flatten().numpy()
        volumes.append(SliceVolume(case.case_id, image.float().contiguous(), label.to(torch.uint8).contiguous(), foreground))
        if i % 25 == 0 or i == len(cases):
            log(f"preprocessed {i}/{len(cases)} cases")
    return volumes


def stack_slices(volumes: list[SliceVolume], picks: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(volume index, slice index) pairs -> images [B, 1, H, W] and label maps [B, H, W] (int64)."""
    images = torch.stack([volumes[v].image[..., z] for v, z in picks])[:, None]
    labels = torch.stack([volumes[v].label[..., z] for v, z in picks]).long()
    return images, labels


class SliceSampler:
    """Seeded training slices: a random volume, then, with probability ``pos_fraction``, a slice holding
    foreground, otherwise any slice (so empty slices are seen too). The same seed gives every model
    the same sequence of batches."""

    def __init__(self, volumes: list[SliceVolume], pos_fraction: float, seed: int) -> None:
        self.volumes, self.pos_fraction = volumes, pos_fraction
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [B, 1, H, W] and dataset label maps [B, H, W] of ``size`` random slices."""
        picks = []
        for _ in range(size):
            v = int(self.rng.integers(len(self.volumes)))
            volume = self.volumes[v]
            if len(volume.foreground) and self.rng.random() < self.pos_fraction:
                picks.append((v, int(self.rng.choice(volume.foreground))))
            else:
                picks.append((v, int(self.rng.integers(volume.image.shape[-1]))))
        return stack_slices(self.volumes, picks)


def validation_slices(volumes: list[SliceVolume], per_case: int) -> list[tuple[int, int]]:
    """``per_case`` evenly spaced slices of each volume, empty ones included: the mix a model meets when
    it segments whole scans."""
    picks = []
    for v, volume in enumerate(volumes):
        depth = volume.image.shape[-1]
        picks += [(v, int(z)) for z in np.unique(np.linspace(0, depth - 1, min(per_case, depth)).round())]
    return picks
