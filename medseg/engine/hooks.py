"""Trainer hooks: what happens around epochs without touching the loop (logging, TensorBoard)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from medseg.strategies.base import Segmenter


class Hook:
    """Called by the Trainer; ``logs`` holds the epoch's scalars (loss, lr, dice per class...) and, after a
    validation, ``preview`` the first validation case's ``image``, ``label`` and ``prediction``."""

    def after_epoch(self, epoch: int, logs: dict[str, float], segmenter: Segmenter, preview: dict | None) -> None:
        pass

    def after_train(self) -> None:
        pass


class LogFileHook(Hook):
    """One JSON line per epoch in ``train_log.jsonl``: easy to read by eye and to plot."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_epoch(self, epoch, logs, segmenter, preview) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **logs}) + "\n")


def overlay(image: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float = 0.45) -> torch.Tensor:
    """A [3, H, W] RGB picture of a grey image slice with coloured labels, for TensorBoard.
    (MONAI's ``blend_images`` does this too but needs matplotlib, which medseg does not depend on.)"""
    grey = image.float()
    grey = (grey - grey.min()) / (grey.max() - grey.min() + 1e-8)
    rgb = grey.expand(3, *grey.shape).clone()
    palette = torch.tensor(
        [[1, 0, 0], [0, 1, 0], [0, 0.4, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 0.5, 0], [0.6, 0.3, 1]]
    )
    for k in range(1, num_classes):
        mask = labels == k
        colour = palette[(k - 1) % len(palette)][:, None]
        rgb[:, mask] = (1 - alpha) * rgb[:, mask] + alpha * colour
    return rgb


class TensorBoardHook(Hook):
    """Scalars every epoch; after each validation, the middle axial slice: ground truth | prediction."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def after_epoch(self, epoch, logs, segmenter, preview) -> None:
        for key, value in logs.items():
            self.writer.add_scalar(key.replace("_", "/", 1) if key.startswith(("val_", "train_")) else key, value, epoch)
        if preview is not None:
            image, z = preview["image"][0], preview["label"].shape[-1] // 2
            k = segmenter.num_classes
            picture = torch.cat([overlay(image[..., z], preview["label"][..., z], k),
                                 overlay(image[..., z], preview["prediction"][..., z], k)], dim=2)
            self.writer.add_image("val/overlay_truth_vs_prediction", picture, epoch)
        self.writer.flush()

    def after_train(self) -> None:
        self.writer.close()
