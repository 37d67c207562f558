"""The ``patch`` strategy: a 3D network on sub-volumes at native resolution, sliding-window prediction."""

from __future__ import annotations

import logging

import torch
from monai.transforms import ClassesToIndicesd, RandCropByLabelClassesd, RandCropByPosNegLabeld, SpatialPadd, Transform

from medseg.config import Config
from medseg.data.transforms import augmentation
from medseg.errors import MedsegError
from medseg.networks import build_network_3d
from medseg.strategies.base import Segmenter, VolumePrediction
from medseg.strategies.sliding_window import WindowSettings, sliding_window_probabilities

LOG = logging.getLogger(__name__)
CLASS_INDICES_KEPT = 10_000  # voxel positions kept per class and volume to draw crop centres from


class PatchSegmenter(Segmenter):
    """Random patches (foreground-biased) for training; gaussian-blended sliding window to predict
    (``sliding_window``: stitched a slab at a time)."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.patch_size = list(config.patch.patch_size)
        self.network = build_network_3d(config.model, 1, self.num_classes, self.patch_size, size_key="patch.patch_size")
        ratios = config.data.class_ratios
        if config.data.sampling == "classes" and ratios is not None and len(ratios) != self.num_classes:
            raise MedsegError(f"config key 'data.class_ratios': expected {self.num_classes} ratios, one per class "
                              f"background first, got {ratios}")

    def network_input_size(self) -> list[int]:
        return self.patch_size

    def train_sampling(self) -> list[Transform]:
        data = self.config.data
        keys = ("image", "label")
        return [SpatialPadd(keys, spatial_size=self.patch_size), *self._crops(), *augmentation(data.augment, keys)]

    def _crops(self) -> list[Transform]:
        """``data.sampling``: foreground/background crops, or crops centred on each class in proportion to
        ``data.class_ratios``, whose voxel indices are computed once per volume (subsampled, so they
        stay small) and cached with it."""
        data, keys = self.config.data, ("image", "label")
        if data.sampling == "classes":
            return [
                ClassesToIndicesd("label", num_classes=self.num_classes, max_samples_per_class=CLASS_INDICES_KEPT),
                RandCropByLabelClassesd(keys, label_key="label", spatial_size=self.patch_size, ratios=data.class_ratios,
                                num_classes=self.num_classes, num_samples=data.samples_per_volume,
                                indices_key="label_cls_indices", warn=False),  # not every organ is in every scan
            ]
        return [RandCropByPosNegLabeld(keys, label_key="label", spatial_size=self.patch_size, pos=data.pos_fraction,
                                       neg=1.0 - data.pos_fraction, num_samples=data.samples_per_volume)]

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.network(batch["image"])
        return {"loss": self.segmentation_loss(logits, batch)}

    def window_settings(self) -> WindowSettings:
        infer = self.config.infer
        roi = tuple(self.patch_size)
        assert len(roi) == 3
        return WindowSettings(roi, infer.overlap, infer.blend, infer.sw_batch_size, self.device)

    def _stitch_devices(self, device: torch.device) -> list[torch.device]:
        """Where the probabilities are stored, in the order to try: with ``auto`` on a GPU, the GPU and
        then, if it runs out of memory, the CPU (as MONAI's ``SlidingWindowInfererAdapt``)."""
        configured = self.config.infer.stitch_device
        if configured != "auto":
            return [torch.device(configured)]
        return [device, torch.device("cpu")] if device.type == "cuda" else [device]

    @torch.inference_mode()
    def segment(self, image: torch.Tensor) -> VolumePrediction:
        """Sliding-window prediction (stored as float16)."""
        return VolumePrediction(segment_together([self], image))


@torch.inference_mode()
def segment_together(segmenters: list[PatchSegmenter], image: torch.Tensor) -> torch.Tensor:
    """Probabilities (float16) from the mean logits of one or more patch models that tile alike (the
    folds of an ensemble: nnU-Net v2 averages its folds' logits), each window cut once for all and
    one rolling buffer whatever their number. A GPU that runs out of memory storing them falls back
    to storing them on the CPU (the networks still run on the GPU) instead of failing."""
    first = segmenters[0]
    settings = first.window_settings()
    if any(s.window_settings() != settings for s in segmenters[1:]):
        raise ValueError("segment_together: the models tile the volume differently")
    stitches = first._stitch_devices(settings.device)

    def mean_logits(inputs: torch.Tensor) -> torch.Tensor:
        total = segmenters[0].network_logits(inputs)
        for other in segmenters[1:]:
            total.add_(other.network_logits(inputs))
        return total.div_(len(segmenters))

    for attempt, stitch in enumerate(stitches):
        try:
            return sliding_window_probabilities(image, mean_logits, settings, stitch)
        except torch.OutOfMemoryError:
            if attempt + 1 == len(stitches):
                raise MedsegError(f"out of memory predicting a volume of {tuple(image.shape[1:])} voxels, "
                                  f"stitching on {stitch}; lower infer.sw_batch_size") from None
            if settings.device.type == "cuda":
                torch.cuda.empty_cache()
            LOG.warning("out of GPU memory stitching %s voxels on %s: stitching on %s instead",
                        tuple(image.shape[1:]), stitch, stitches[attempt + 1])
    raise AssertionError("unreachable: the last attempt returns or raises")
