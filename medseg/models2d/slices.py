"""Axial slices of preprocessed volumes: what every model of a 2D comparison trains and is scored on.

Volumes go through the same preprocessing as the 3D strategies (``medseg.data.transforms``), are padded
or cropped in plane to ``compare.slice_size`` and cached; training slices are cut along the last array
axis, which is axial after reorientation to RAS, by the slice sampler the slice2d strategy uses.
"""

from __future__ import annotations

from monai.transforms import ResizeWithPadOrCropd, Transform

from medseg.config import Config
from medseg.data.sampling import RandSliced
from medseg.data.transforms import preprocessing

AXIAL = 2


def volume_transforms(config: Config) -> list[Transform]:
    """Deterministic: preprocessing, then every axial slice padded or cropped to ``compare.slice_size``."""
    return [*preprocessing(config.data),
            ResizeWithPadOrCropd(("image", "label"), spatial_size=(*config.compare.slice_size, -1))]


def slice_sampling(config: Config) -> list[Transform]:
    """One random axial slice per draw, holding foreground with probability ``data.pos_fraction``."""
    return [RandSliced([AXIAL], context=0, pos_fraction=config.data.pos_fraction)]
