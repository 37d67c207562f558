"""The ``slice2d`` strategy: 2D networks on slices along each axis, fused into one 3D prediction.

After Zhou et al., "A Fixed-Point Model for Pancreas Segmentation in Abdominal CT Scans" (MICCAI 2017):
2D costs with part of the 3D context won back by fusing the sagittal, coronal and axial predictions,
and optionally a coarse-to-fine loop that predicts again inside the region found so far.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
from monai.inferers import SliceInferer
from monai.transforms import SpatialPadd, Transform
from torch import nn

from medseg.config import Config
from medseg.data.sampling import RandSliced, SliceCropd
from medseg.data.transforms import augmentation
from medseg.metrics import binary_dice, segmentation_metrics
from medseg.networks import build_network_2d
from medseg.regions import bounding_box
from medseg.resample import class_argmax, softmax_
from medseg.strategies.base import Segmenter, VolumePrediction, leave_out_unannotated


def with_context(volume: torch.Tensor, axis: int, k: int) -> torch.Tensor:
    """[C, X, Y, Z] -> [C*(2k+1), X, Y, Z]: each slice along ``axis`` gets its k neighbours on each side
    as extra channels (edge slices repeat), so a 2D network on one slice sees 2.5D input."""
    if k == 0:
        return volume
    size = volume.shape[1 + axis]
    index = torch.arange(size, device=volume.device)
    shifted = [volume.index_select(1 + axis, (index + d).clamp(0, size - 1)) for d in range(-k, k + 1)]
    return torch.cat(shifted, dim=0)


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
        if self.total is None:
            raise ValueError("AxisFusion.result: no axis prediction was added")
        mean = self.total.div_(self.count)
        if self.method == "majority":
            assert self.votes is not None  # add() counts the votes in majority mode
            labels = class_argmax(self.votes + 1e-3 * mean)
            return VolumePrediction(self.votes.div_(self.count), decided_labels=labels)
        return VolumePrediction(mean)


class SliceSegmenter(Segmenter):
    """2D slices for training (random axis, foreground-biased); SliceInferer per axis and fusion to predict."""

    ddp_find_unused_parameters = True  # a batch may hold slices of only some axes
    inference_keys = ("slice2d.fusion", "slice2d.refine")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        s = config.slice2d
        self.axes = list(s.axes)
        self.in_channels = 2 * s.context_slices + 1
        count = 1 if s.shared_model else len(self.axes)
        networks = [build_network_2d(config.model, self.in_channels, self.num_classes, s.patch_size)
                    for _ in range(count)]
        self.network = AxisNetworks(networks, self.axes)

    def exported_networks(self) -> list[tuple[nn.Module, tuple[int, ...]]]:
        """Each axis's 2D network (one if shared), taking [1, 2k+1, *slice2d.patch_size] slices."""
        assert isinstance(self.network, AxisNetworks)
        size = (1, self.in_channels, *self.config.slice2d.patch_size)
        return [(network, size) for network in self.network.models]

    def use_exported(self, networks: list[nn.Module]) -> None:
        self.network = AxisNetworks(networks, self.axes)

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
        total: torch.Tensor | None = None
        for axis in axes.unique().tolist():
            chosen = axes == axis
            logits = self.network(batch["image"][chosen], axis=axis)
            term = self.segmentation_loss(logits, batch, chosen) * chosen.float().mean()
            total = term if total is None else total + term
        if total is None:
            raise ValueError("SliceSegmenter.training_step: the batch holds no slices")
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
    def segment(self, image: torch.Tensor, axis_labels: dict | None = None) -> VolumePrediction:
        s = self.config.slice2d
        prediction = self._fused(image, axis_labels)
        for _ in range(s.refine_rounds):
            box = bounding_box(prediction.labels > 0, s.refine_margin)
            if box is None:
                break
            inner = self._fused(image[(slice(None), *box)])
            labels = torch.zeros_like(prediction.labels)
            labels[box] = inner.labels
            probabilities = torch.zeros_like(prediction.probabilities)
            probabilities[0] = 1.0  # outside the box: background
            probabilities[(slice(None), *box)] = inner.probabilities
            agreement = binary_dice(prediction.labels > 0, labels > 0)
            prediction = VolumePrediction(probabilities, decided_labels=labels)
            if agreement >= s.refine_stop_dice:
                break
        return prediction

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Dice of the fused prediction (``dice``) and of each axis alone (``dice_axis<k>``)."""
        out: dict[str, list] = {"dice": [], "labels": [], **{f"dice_axis{a}": [] for a in self.axes}}
        for image, label in zip(batch["image"], batch["label"]):
            axis_labels: dict[int, torch.Tensor] = {}
            fused = self.segment(image, axis_labels).labels.cpu()
            target = label[0].cpu()
            for key, pred in [("dice", fused), *((f"dice_axis{a}", p.cpu()) for a, p in axis_labels.items())]:
                dice = segmentation_metrics(pred, target, self.num_classes, include_hd95=False)["dice"]
                out[key].append(torch.as_tensor(dice, dtype=torch.float32))
            out["labels"].append(fused)
        return leave_out_unannotated({k: torch.stack(v) for k, v in out.items() if v}, batch)
