"""Slice sampling shared by the slice2d strategy and the 2D model comparison: both draw 2D training
slices (foreground-biased) from cached preprocessed volumes."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.transforms import MapTransform, RandCropByPosNegLabeld, Randomizable


class RandSliced(Randomizable, MapTransform):
    """Pick an axis and a slice (a slice holding foreground with probability ``pos_fraction``) from a
    cached volume; returns 2D ``image`` [C*(2k+1), H, W] (the slice and its ``context`` neighbours on
    each side as channels, edge slices repeated), ``label`` [1, H, W] and ``axis``."""

    def __init__(self, axes: Sequence[int], context: int, pos_fraction: float) -> None:
        super().__init__(("image", "label"))
        self.axes, self.context, self.pos_fraction = list(axes), context, pos_fraction
        self.axis, self.index = 0, 0  # the latest draw of ``randomize``

    def randomize(self, label: torch.Tensor) -> None:
        """Draw ``self.axis`` and the ``self.index`` of a slice along it."""
        axis = int(self.R.choice(self.axes))
        others = tuple(d for d in (1, 2, 3) if d != 1 + axis)
        with_foreground = torch.nonzero(label[0].bool().any(dim=tuple(d - 1 for d in others))).flatten()
        if len(with_foreground) and self.R.rand() < self.pos_fraction:
            self.axis, self.index = axis, int(with_foreground[self.R.randint(len(with_foreground))])
        else:
            self.axis, self.index = axis, int(self.R.randint(label.shape[1 + axis]))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        # Plain tensors: a slice has no 3D affine, and MetaTensor would make MONAI treat it as 3D.
        image, label = (torch.as_tensor(d[k]).as_subclass(torch.Tensor) for k in ("image", "label"))
        self.randomize(label)
        axis, index = self.axis, self.index
        size = image.shape[1 + axis]
        neighbours = (torch.arange(index - self.context, index + self.context + 1)).clamp(0, size - 1)
        stack = image.index_select(1 + axis, neighbours).movedim(1 + axis, 1)  # [C, 2k+1, H, W]
        d["image"] = stack.reshape(-1, *stack.shape[2:])
        d["label"] = label.select(1 + axis, index).clone()  # [1, H, W], a copy: the cache stays untouched
        d["axis"] = axis
        return d


class SliceCropd(RandCropByPosNegLabeld):
    """Foreground-biased crop of a slice. Slices without foreground are expected here (the slice sampler
    draws them on purpose), so MONAI's warning about them is silenced."""

    def __call__(
        self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None
    ) -> list[dict[Hashable, torch.Tensor]]:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            return super().__call__(data, lazy=lazy)
