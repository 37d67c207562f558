"""Trainer hooks: what happens around epochs without touching the loop (logging, TensorBoard)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from medseg.engine.task import Task


class Hook:
    """Called by the Trainer; ``logs`` holds the epoch's scalars (loss, lr, dice per class...) and, after a
    validation, ``preview`` the task's pictures of the first validation case (tag -> RGB [3, H, W])."""

    def after_epoch(self, epoch: int, logs: dict[str, float], task: Task, preview: dict | None) -> None:
        pass

    def after_train(self) -> None:
        pass


class LogFileHook(Hook):
    """One JSON line per epoch in ``train_log.jsonl``: easy to read by eye and to plot."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_epoch(self, epoch: int, logs: dict[str, float], task: Task, preview: dict | None) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **logs}) + "\n")


class TensorBoardHook(Hook):
    """Scalars every epoch; after each validation, the task's pictures (e.g. ground truth | prediction)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def after_epoch(self, epoch: int, logs: dict[str, float], task: Task, preview: dict | None) -> None:
        for key, value in logs.items():
            tag = key.replace("_", "/", 1) if key.startswith(("val_", "train_")) else key
            self.writer.add_scalar(tag, value, epoch)
        for tag, picture in (preview or {}).items():
            self.writer.add_image(tag, picture, epoch)
        self.writer.flush()

    def after_train(self) -> None:
        self.writer.close()
