"""The Segmenter: a training task that can also segment a whole volume, which every strategy is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from monai.transforms import Transform
from torch import nn

from medseg.config import Config
from medseg.engine.pictures import overlay
from medseg.engine.task import Task
from medseg.losses import build_loss
from medseg.metrics import segmentation_metrics
from medseg.resample import class_argmax


@dataclass
class VolumePrediction:
    """A prediction on the preprocessed grid: ``probabilities`` [K, D, H, W] (softmax, sums to one over
    K; float16 where the grid is a whole scan at full resolution, float32 otherwise) and ``labels``
    [D, H, W]. The labels are the argmax of the probabilities unless the strategy
    decided them otherwise (``decided_labels``, e.g. by votes), and are computed when first asked for:
    inference resamples the probabilities to the scan's grid and never needs labels on this one, whose
    argmax alone would cost 12 bytes a voxel."""

    probabilities: torch.Tensor
    decided_labels: torch.Tensor | None = None

    @property
    def labels(self) -> torch.Tensor:
        if self.decided_labels is None:
            self.decided_labels = class_argmax(self.probabilities)
        return self.decided_labels


@dataclass
class Cascade:
    """A second model that predicts again at full resolution inside the region this one found, grown by
    ``margin_mm``: ``run`` is its run folder, named by the config key ``key``."""

    run: Path
    margin_mm: float
    key: str


def leave_out_unannotated(figures: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
    """``figures`` with every per-class Dice (keys starting ``dice``) NaN where the batch says its case
    does not annotate the class (``data.partial_classes``), so that it is not scored there."""
    if "annotated" not in batch:
        return figures
    unannotated = ~batch["annotated"][:, 1:].bool().cpu()
    for key, values in figures.items():
        if key.startswith("dice"):
            values[unannotated] = torch.nan
    return figures


class Segmenter(Task):
    """A strategy: how volumes are sampled for training and how a whole volume is predicted.

    ``inference_keys`` are the config keys (or key prefixes) of the strategy's own section that change
    how a trained model predicts, not what it learned: ``medseg infer`` accepts overrides of those.
    """

    inference_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.num_classes = len(config.data.class_names or [])
        self.loss = build_loss(config.train.loss, partial_labels=bool(config.data.partial_classes),
                               class_weights=config.train.class_weights, num_classes=self.num_classes)
        self.mirror_axes = list(config.infer.mirror_axes)  # none while the Trainer validates

    @property
    def score_names(self) -> list[str]:
        return list((self.config.data.class_names or [])[1:])

    def grid_transforms(self, with_label: bool) -> list[Transform]:
        """Deterministic steps after the shared preprocessing that put a volume on the grid the network
        works on (none by default). Inference maps predictions back through the image's affine."""
        return []

    def train_sampling(self) -> list[Transform]:
        """Transforms after preprocessing that turn a cached volume into training samples."""
        raise NotImplementedError

    def segmentation_loss(self, logits: torch.Tensor, batch: dict, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """``train.loss`` of ``logits`` against the batch's labels (the ``chosen`` samples only, if given),
        in its marginal form where the batch says which classes each sample annotates. Logits with one
        more dimension than the labels are deep supervision's outputs ([N, outputs, C, *spatial], the
        full-resolution one first, each upsampled to it): their losses are weighed 1, 1/2, 1/4, ... and
        normalised, as nnU-Net weighs them."""
        label = batch["label"] if chosen is None else batch["label"][chosen]
        annotated = batch.get("annotated")
        if annotated is not None and chosen is not None:
            annotated = annotated[chosen]

        def loss_of(output: torch.Tensor) -> torch.Tensor:
            return self.loss(output, label) if annotated is None else self.loss(output, label, annotated)

        if logits.dim() == label.dim():
            return loss_of(logits)
        weights = [0.5**i for i in range(logits.shape[1])]
        losses = torch.stack([loss_of(logits[:, i]) for i in range(len(weights))])
        return (losses * losses.new_tensor(weights)).sum() / sum(weights)

    def segment(self, image: torch.Tensor) -> VolumePrediction:
        """Segment one preprocessed image [C, D, H, W] on its own grid."""
        raise NotImplementedError

    def network_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The network's float32 logits for a batch [N, C, *spatial] (windows, or whole grids), averaged
        over ``infer.mirror_axes`` flips (test-time mirroring, one flip per axis; nnU-Net v2 also combines
        them). Autocast on CUDA with ``train.amp``."""
        flips = [()] + [(axis + 2,) for axis in self.mirror_axes]
        device = inputs.device
        logits: torch.Tensor | None = None
        with torch.autocast(device.type, enabled=device.type == "cuda" and self.config.train.amp):
            for dims in flips:
                out = self.network(inputs.flip(dims) if dims else inputs)
                out = (out.flip(dims) if dims else out).float()
                logits = out if logits is None else logits.add_(out)
        assert logits is not None  # flips starts with the unflipped input
        return logits.div_(len(flips))

    def exported_networks(self) -> list[tuple[nn.Module, tuple[int, ...]]]:
        """The networks ``medseg export`` writes, each with the shape of one input it takes
        ([1, channels, *spatial]); ``use_exported`` puts loaded exports in their place."""
        return [(self.network, (1, 1, *self.network_input_size()))]

    def network_input_size(self) -> list[int]:
        """The spatial size of the network's input at inference (a window, or the whole grid)."""
        raise NotImplementedError

    def use_exported(self, networks: list[nn.Module]) -> None:
        """Predict with exported networks (TorchScript or ONNX runtime) instead of the trained ones."""
        (self.network,) = networks

    def cascade(self) -> Cascade | None:
        """The model that refines this one's prediction at inference, if the config names one."""
        return None

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Per-class Dice of each whole validation volume (NaN where a class is absent from both, or not
        annotated in that case), and the predicted ``labels`` (validation batches hold one volume, or
        volumes of one shape).

        Unmirrored, as nnU-Net validates while training: mirroring along two axes made OpenKBP's patch
        validations 3x slower and pushed a 30-minute run to 35. The final validation and ``medseg infer``
        mirror as planned."""
        self.mirror_axes = []
        try:
            dices, predictions = [], []
            for image, label in zip(batch["image"], batch["label"]):
                pred = self.segment(image).labels.cpu()
                metrics = segmentation_metrics(pred, label[0].cpu(), self.num_classes, include_hd95=False)
                dices.append(torch.as_tensor(metrics["dice"], dtype=torch.float32))
                predictions.append(pred)
        finally:
            self.mirror_axes = list(self.config.infer.mirror_axes)
        return leave_out_unannotated({"dice": torch.stack(dices), "labels": torch.stack(predictions)}, batch)

    def preview_images(self, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """RGB pictures [3, H, W] of the first validation case for TensorBoard: the middle axial slice
        with the ground truth | the prediction."""
        image, label, prediction = batch["image"][0, 0].cpu(), batch["label"][0, 0].cpu(), outputs["labels"][0].cpu()
        z = label.shape[-1] // 2
        pictures = [overlay(image[..., z], labels[..., z], self.num_classes) for labels in (label, prediction)]
        return {"val/overlay_truth_vs_prediction": torch.cat(pictures, dim=2)}
