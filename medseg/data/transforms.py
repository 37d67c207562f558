"""The MONAI dictionary-transform pipelines, built from config, for every strategy.

``preprocessing`` is the deterministic part (load, orient, resample, crop, normalise) shared by
training, validation and inference; training adds a strategy's sampling and the random augmentation.
Everything before the first random transform is cached by ``CacheDataset``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    CropForegroundd,
    MapTransform,
    NormalizeIntensityd,
    Orientation,
    Orientationd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacing,
    Spacingd,
    Transform,
)

from medseg.config import AugmentConfig, DataConfig
from medseg.data.checks import label_problems
from medseg.errors import MedsegError
from medseg.io import Volume, read_volume
from medseg.resample import resample_image

CT_BODY_THRESHOLD_HU = -500.0


def _source_meta(path: object, volume: Volume, affine: torch.Tensor) -> dict:
    """What inference maps a prediction back with: the scan's name, affine and shape as read."""
    name = "<in memory>" if isinstance(path, Volume) else str(path)
    return {"filename_or_obj": name, "original_affine": affine.clone(), "spatial_shape": volume.array.shape}


class LoadVolumed(MapTransform):
    """Read each key's path with ``medseg.io`` into a channel-first MetaTensor carrying its affine.

    Images become float32 and labels uint8, which keeps cached datasets small. With ``num_classes``,
    label values outside 0..num_classes-1 are a user error naming the file.
    """

    def __init__(self, keys: KeysCollection, num_classes: int | None = None) -> None:
        super().__init__(keys)
        self.num_classes = num_classes

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            volume = path if isinstance(path, Volume) else read_volume(path)  # a file, or one in memory
            if key == "label" and (problems := label_problems(path, volume.array, self.num_classes)):
                raise MedsegError(problems[0])
            dtype = np.uint8 if key == "label" else np.float32
            array = torch.from_numpy(volume.array.astype(dtype, copy=False)[None])
            affine = torch.as_tensor(volume.affine)
            meta = _source_meta(path, volume, affine)
            d[key] = MetaTensor(array, affine=affine, meta=meta)
        return d


class AnnotatedClassesd(MapTransform):
    """``annotated``: which classes a case's label map speaks for, a bool [K] (background first).

    Every class is annotated except those of ``data.partial_classes`` the whole label map lacks; the
    marginal loss and the validation Dice read it. Computed once per case on the preprocessed label,
    before any crop, so a crop that misses an annotated organ still teaches "not this organ here".
    """

    def __init__(self, class_names: list[str], partial_classes: list[str]) -> None:
        super().__init__("label")
        self.num_classes = len(class_names)
        self.partial = [class_names.index(name) for name in partial_classes]

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        annotated = torch.ones(self.num_classes, dtype=torch.bool)
        if self.partial:
            present = torch.bincount(torch.as_tensor(d["label"]).flatten().long(), minlength=self.num_classes) > 0
            annotated[self.partial] = present[self.partial]
        d["annotated"] = annotated
        return d


def _foreground_selector(data: DataConfig) -> Callable[[torch.Tensor], torch.Tensor]:
    """The voxels the foreground crop keeps; all of them when none is foreground (a constant image, or a
    CT with nothing above the body threshold), which would otherwise be cropped to nothing."""
    def body(x: torch.Tensor) -> torch.Tensor:
        return x > CT_BODY_THRESHOLD_HU if data.modality == "ct" else x > x.min()

    def select(x: torch.Tensor) -> torch.Tensor:
        mask = body(x)
        return mask if bool(mask.any()) else torch.ones_like(mask)

    return select


def intensity_transform(data: DataConfig, key: str = "image") -> Transform:
    """``data.normalization``: CT clipped to the window and scaled to [0, 1] (``window``), or clipped and
    z-scored with the dataset's foreground statistics (``ct_zscore``: one linear map of the clipped range,
    so one MONAI transform); anything else standardised per image (``zscore``)."""
    method = data.normalization
    if method == "auto":
        method = "window" if data.modality == "ct" else "zscore"
    if method in ("window", "ct_zscore"):
        if data.intensity_window is None:
            raise MedsegError(f"config key 'data.intensity_window': needed by data.normalization={method}")
        lo, hi = data.intensity_window
        if method == "window":
            return ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)
        mean, std = data.intensity_mean or 0.0, data.intensity_std or 1.0
        return ScaleIntensityRanged(key, a_min=lo, a_max=hi, b_min=(lo - mean) / std, b_max=(hi - mean) / std,
                                    clip=True)
    return NormalizeIntensityd(key, channel_wise=True)


class LoadResampledImaged(MapTransform):
    """Read an image and put it on the grid ``Orientationd`` then ``Spacingd`` (bilinear, border padding)
    would give, in one slab-by-slab pass from the voxels as stored: the same grid and values (tests
    hold it to MONAI's), without the full-resolution float32 copy, its reoriented copy and the
    sampling grid MONAI makes on the way, which for a 512x512x1600 CT come to 4 GB. The grid is
    found by applying MONAI's two transforms lazily to a stand-in that has the image's shape and
    affine but no voxels. Images only: label maps are resampled by MONAI, with nearest neighbours."""

    def __init__(self, keys: KeysCollection, orientation: str, spacing: list[float] | None) -> None:
        super().__init__(keys)
        self.orient = Orientation(axcodes=orientation, labels=None, lazy=True)
        self.rescale = Spacing(pixdim=spacing, mode="bilinear", dtype=np.float32, lazy=True) if spacing else None

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            volume = path if isinstance(path, Volume) else read_volume(path)  # a file, or one in memory
            affine = torch.as_tensor(volume.affine, dtype=torch.float64)
            stand_in = MetaTensor(torch.zeros(()).expand(1, *volume.array.shape), affine=affine)
            planned = self.orient(stand_in)
            if self.rescale is not None:
                planned = self.rescale(planned)
            assert isinstance(planned, MetaTensor)  # lazy transforms of a MetaTensor only record the change
            grid_affine = planned.peek_pending_affine().to(torch.float64)
            shape = tuple(int(n) for n in planned.peek_pending_shape())
            mapping = np.linalg.solve(volume.affine, grid_affine.numpy())  # grid voxel -> stored voxel
            values = resample_image(volume.array, mapping, shape)
            meta = _source_meta(path, volume, affine)
            d[key] = MetaTensor(values[None], affine=grid_affine, meta=meta)
        return d


def preprocessing(data: DataConfig, with_label: bool = True) -> list[Transform]:
    """Deterministic steps, identical at training and inference time (needs a planned config)."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"][: len(keys)]
    steps: list[Transform]
    if with_label:
        loader = LoadVolumed(keys, num_classes=len(data.class_names) if data.class_names else None)
        steps = [loader, Orientationd(keys, axcodes=data.orientation, labels=None)]
        if data.spacing:
            steps.append(Spacingd(keys, pixdim=data.spacing, mode=modes, dtype=np.float32))
    else:  # inference: whole scans, some of them very large
        steps = [LoadResampledImaged(keys, data.orientation, data.spacing)]
    if data.crop_foreground:
        select = _foreground_selector(data)
        steps.append(CropForegroundd(keys, source_key="image", select_fn=select, allow_smaller=True))
    steps.append(intensity_transform(data))
    return steps


def augmentation(
    aug: AugmentConfig, keys: tuple[str, ...] = ("image", "label"), spatial_dims: int = 3
) -> list[Transform]:
    """Spatial (affine, flips) then intensity augmentation; label maps use nearest interpolation."""
    steps: list[Transform] = []
    if aug.affine_prob > 0:
        angle = math.radians(aug.rotate_degrees)
        steps.append(
            RandAffined(
                keys,
                prob=aug.affine_prob,
                rotate_range=(angle,) * (3 if spatial_dims == 3 else 1),
                scale_range=(aug.scale_range,) * spatial_dims,
                mode=("bilinear", "nearest")[: len(keys)],
                padding_mode=("border", "zeros")[: len(keys)],
            )
        )
    steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in aug.flip_axes]
    if aug.intensity_prob > 0:
        steps += [
            RandScaleIntensityd("image", factors=0.1, prob=aug.intensity_prob),
            RandShiftIntensityd("image", offsets=0.1, prob=aug.intensity_prob),
        ]
    if aug.noise_prob > 0:
        steps.append(RandGaussianNoised("image", prob=aug.noise_prob, std=aug.noise_std))
    return steps
