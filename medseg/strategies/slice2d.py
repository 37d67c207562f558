"""The ``slice2d`` strategy: 2D networks on slices along each axis, fused into one 3D prediction.

After Zhou et al., "A Fixed-Point Model for Pancreas Segmentation in Abdominal CT Scans" (MICCAI 2017):
2D costs with part of the 3D context won back by fusing the sagittal, coronal and axial predictions,
and optionally a coarse-to-fine loop that predicts again inside the region found so far.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence

import torch
from monai.inferers import SliceInferer
from monai.transforms import MapTransform, Randomizable, RandCropByPosNegLabeld, SpatialPadd, Transform
from torch import nn

from medseg.config import Config
from medseg.data.transforms import augmentation
from medseg.errors import MedsegError
from medseg.losses import build_loss
from medseg.metrics import segmentation_metrics
from medseg.networks import build_network_2d
from medseg.resample import class_argmax
from medseg.strategies.base import Segmenter, VolumePrediction
from medseg.strategies.patch import softmax_

FUSIONS = ("mean", "majority", "single")


def with_context(volume: torch.Tensor, axis: int, k: int) -> torch.Tensor:
    """[C, X, Y, Z] -> [C*(2k+1), X, Y, Z]: each slice along ``axis`` gets its k neighbours on each side
    as extra channels (edge slices repeat), so a 2D network on one slice sees 2.5D input."""
    if k == 0:
        return volume
    size = volume.shape[1 + axis]
    index = torch.arange(size, device=volume.device)
    shifted = [volume.index_select(1 + axis, (index + d).clamp(0, size - 1)) for d in range(-k, k + 1)]
    return torch.cat(shifted, dim=0)


class RandSliced(Randomizable, MapTransform):
    """Pick an axis and a slice (a slice holding foreground with probability ``pos_fraction``) from a
    cached volume; returns 2D ``image`` [C*(2k+1), H, W], ``label`` [1, H, W] and ``axis``."""

    def __init__(self, axes: Sequence[int], context: int, pos_fraction: float) -> None:
        super().__init__(("image", "label"))
        self.axes, self.context, self.pos_fraction = list(axes), context, pos_fraction

    def randomize(self, label: torch.Tensor) -> tuple[int, int]:
        axis = int(self.R.choice(self.axes))
        others = tuple(d for d in (1, 2, 3) if d != 1 + axis)
        with_foreground = torch.nonzero(label[0].bool().any(dim=tuple(d - 1 for d in others))).flatten()
        if len(with_foreground) and self.R.rand() < self.pos_fraction:
            return axis, int(with_foreground[self.R.randint(len(with_foreground))])
        return axis, int(self.R.randint(label.shape[1 + axis]))

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        # Plain tensors: a slice has no 3D affine, and MetaTensor would make MONAI treat it as 3D.
        image, label = (torch.as_tensor(d[k]).as_subclass(torch.Tensor) for k in ("image", "label"))
        axis, index = self.randomize(label)
        size = image.shape[1 + axis]
        neighbours = (torch.arange(index - self.context, index + self.context + 1)).clamp(0, size - 1)
        stack = image.index_select(1 + axis, neighbours).movedim(1 + axis, 1)  # [C, 2k+1, H, W]
        d["image"] = stack.reshape(-1, *stack.shape[2:])
        d["label"] = label.select(1 + axis, index)  # [1, H, W]
        d["axis"] = axis
        return d


class SliceCropd(RandCropByPosNegLabeld):
    """Foreground-biased crop of a slice. Slices without foreground are expected here (the slice sampler
    draws them on purpose), so MONAI's warning about them is silenced."""

    def __call__(self, data, lazy=None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
            return super().__call__(data, lazy=lazy)


class AxisNetworks(nn.Module):
    """One 2D network per axis (or one shared); ``forward(x, axis)`` routes slices to theirs."""

    def __init__(self, networks: list[nn.Module], axes: list[int]) -> None:
        super().__init__()
        self.models = nn.ModuleList(networks)
        self.axes = axes

    def forward(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        return self.models[0 if len(self.models) == 1 else self.axes.index(axis)](x)


class AxisFusion:
    """Accumulates per-axis probabilities [K, ...] one axis at a time (bounded memory) and fuses them:
    ``mean`` averages probabilities; ``majority`` counts each axis's argmax vote, ties broken by the mean
    probability, and reports vote fractions as probabilities."""

    def __init__(self, method: str) -> None:
        if method not in FUSIONS:
            raise MedsegError(f"config key 'slice2d.fusion': expected one of {', '.join(FUSIONS)}, got '{method}'")
        self.method, self.count = method, 0
        self.total: torch.Tensor | None = None
        self.votes: torch.Tensor | None = None

    def add(self, probabilities: torch.Tensor) -> None:
        self.count += 1
        if self.method == "majority":
            labels = class_argmax(probabilities).long()
            vote = torch.zeros_like(probabilities).scatter_(0, labels[None], 1.0)
            self.votes = vote if self.votes is None else self.votes.add_(vote)
        self.total = probabilities if self.total is None else self.total.add_(probabilities)

    def result(self) -> VolumePrediction:
        mean = self.total.div_(self.count)
        if self.method == "majority":
            labels = class_argmax(self.votes + 1e-3 * mean)
            return VolumePrediction(labels=labels, probabilities=self.votes.div_(self.count))
        return VolumePrediction(labels=class_argmax(mean), probabilities=mean)


def crop_box(mask: torch.Tensor, margin: int) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``margin`` voxels and clipped to the volume; None if empty."""
    nonzero = torch.nonzero(mask)
    if len(nonzero) == 0:
        return None
    low = (nonzero.min(0).values - margin).clamp(min=0)
    high = torch.minimum(nonzero.max(0).values + margin + 1, torch.as_tensor(mask.shape, device=mask.device))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def binary_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


class SliceSegmenter(Segmenter):
    """2D slices for training (random axis, foreground-biased); SliceInferer per axis and fusion to predict."""

    ddp_find_unused_parameters = True  # a batch may hold slices of only some axes

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        s = config.slice2d
        if not s.axes or any(a not in (0, 1, 2) for a in s.axes) or len(set(s.axes)) != len(s.axes):
            raise MedsegError(f"config key 'slice2d.axes': expected distinct axes among 0, 1, 2, got {s.axes}")
        if s.fusion == "single" and s.fusion_axis not in s.axes:
            raise MedsegError(f"config key 'slice2d.fusion_axis': {s.fusion_axis} is not among slice2d.axes {s.axes}")
        AxisFusion(s.fusion)  # validates the method name early
        self.axes = list(s.axes)
        in_channels = 2 * s.context_slices + 1
        count = 1 if s.shared_model else len(self.axes)
        self.network = AxisNetworks(
            [build_network_2d(config.model, in_channels, self.num_classes, s.patch_size) for _ in range(count)], self.axes
        )
        self.loss = build_loss(config.train.loss)

    def train_sampling(self) -> list[Transform]:
        data, s = self.config.data, self.config.slice2d
        keys = ("image", "label")
        augment = dataclasses.replace(data.augment, flip_axes=[])  # flips name volume axes; slices mix them
        return [
            RandSliced(self.axes, s.context_slices, data.pos_fraction),
            SpatialPadd(keys, spatial_size=s.patch_size),
            SliceCropd(keys, label_key="label", spatial_size=s.patch_size, pos=data.pos_fraction,
                       neg=1.0 - data.pos_fraction, num_samples=data.samples_per_volume),
            *augmentation(augment, keys, spatial_dims=2),
        ]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        axes = torch.as_tensor(batch["axis"])
        total = 0.0
        for axis in axes.unique().tolist():
            chosen = axes == axis
            logits = self.network(batch["image"][chosen], axis=axis)
            total = total + self.loss(logits, batch["label"][chosen]) * chosen.float().mean()
        return {"loss": total}

    def axis_probabilities(self, image: torch.Tensor, axis: int) -> torch.Tensor:
        """Softmax [K, X, Y, Z] of the slices along ``axis`` of a preprocessed image [C, X, Y, Z]."""
        device, infer, s = self.device, self.config.infer, self.config.slice2d
        stitch = device if infer.stitch_device == "auto" else torch.device(infer.stitch_device)
        inferer = SliceInferer(spatial_dim=axis, roi_size=s.patch_size, sw_batch_size=infer.sw_batch_size,
                               overlap=infer.overlap, mode=infer.blend, sw_device=device, device=stitch)
        x = with_context(image.to(device), axis, s.context_slices)[None]
        with torch.autocast(device.type, enabled=device.type == "cuda" and self.config.train.amp):
            logits = inferer(x, functools.partial(self.network, axis=axis))
        return softmax_(logits[0].float())

    def _fused(self, image: torch.Tensor, axis_labels: dict | None = None) -> VolumePrediction:
        s = self.config.slice2d
        axes = [s.fusion_axis] if s.fusion == "single" else self.axes
        fusion = AxisFusion(s.fusion)
        for axis in axes:
            probabilities = self.axis_probabilities(image, axis)
            if axis_labels is not None:
                axis_labels[axis] = class_argmax(probabilities)
            fusion.add(probabilities)
        return fusion.result()

    @torch.inference_mode()
    def predict_volume(self, image: torch.Tensor, axis_labels: dict | None = None) -> VolumePrediction:
        s = self.config.slice2d
        prediction = self._fused(image, axis_labels)
        for _ in range(s.refine_rounds):
            box = crop_box(prediction.labels > 0, s.refine_margin)
            if box is None:
                break
            inner = self._fused(image[(slice(None), *box)])
            labels = torch.zeros_like(prediction.labels)
            labels[box] = inner.labels
            probabilities = torch.zeros_like(prediction.probabilities)
            probabilities[0] = 1.0  # outside the box: background
            probabilities[(slice(None), *box)] = inner.probabilities
            agreement = binary_dice(prediction.labels > 0, labels > 0)
            prediction = VolumePrediction(labels=labels, probabilities=probabilities)
            if agreement >= s.refine_stop_dice:
                break
        return prediction

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Dice of the fused prediction (``dice``) and of each axis alone (``dice_axis<k>``)."""
        out: dict[str, list] = {"dice": [], "labels": [], **{f"dice_axis{a}": [] for a in self.axes}}
        for image, label in zip(batch["image"], batch["label"]):
            axis_labels: dict[int, torch.Tensor] = {}
            fused = self.predict_volume(image, axis_labels).labels.cpu()
            target = label[0].cpu()
            for key, pred in [("dice", fused), *((f"dice_axis{a}", p.cpu()) for a, p in axis_labels.items())]:
                dice = segmentation_metrics(pred, target, self.num_classes, include_hd95=False)["dice"]
                out[key].append(torch.as_tensor(dice, dtype=torch.float32))
            out["labels"].append(fused)
        return {k: torch.stack(v) for k, v in out.items() if v}
