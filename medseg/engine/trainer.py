"""One Trainer for every task (3D strategies, pretraining, 2D models): AMP, gradient accumulation, time
budget, checkpoints, exact resume, hooks, and DDP when launched by torchrun.

Constructing a Trainer builds everything that can fail on the config (optimizer, schedule, encoder
groups) and writes nothing, so commands build it before they create the run folder."""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from medseg.config import Config, config_to_dict
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.hooks import Hook
from medseg.engine.run_folder import is_main_process
from medseg.engine.speed import autocast, channels_last_, channels_last_input, check_cpu_bf16
from medseg.engine.task import Task
from medseg.errors import MedsegError

VALIDATION_TIME_RATIO = 9.0  # train.val_every=0: training seconds per validation second, at least


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; the Trainer calls it at every epoch start so that a run resumed
    from an epoch checkpoint draws the same random numbers as an uninterrupted one."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(
    config: Config, params: Iterable[dict[str, Any]] | Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """``train.optimizer`` (a choice the config has already checked) over ``params``."""
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, nesterov=True,
                               weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)


def batch_items(batch: dict) -> int:
    """How many samples (crops, slices, volumes) a collated batch holds: the length of its images."""
    image = batch.get("image")
    if torch.is_tensor(image):
        return int(image.shape[0])
    return len(image) if isinstance(image, (list, tuple)) else 0


def learning_rate(config: Config, epoch: int, elapsed_s: float) -> float:
    """Schedule on training progress: the larger of the epoch fraction and the time-budget fraction,
    so a run cut by ``train.max_minutes`` still anneals to a small learning rate."""
    train = config.train
    progress = epoch / train.max_epochs
    if train.max_minutes:
        progress = max(progress, elapsed_s / (60.0 * train.max_minutes))
    progress = min(progress, 1.0)
    if train.scheduler == "poly":
        factor = (1.0 - progress) ** 0.9
    elif train.scheduler == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:  # constant
        factor = 1.0
    if epoch < train.warmup_epochs:
        factor *= (epoch + 1) / (train.warmup_epochs + 1)
    return train.lr * max(factor, 1e-3)


@dataclass
class FitResult:
    best_metric: float
    best_epoch: int
    epochs_run: int
    elapsed_s: float


class Trainer:
    """Drives a Task. Checkpoints hold config, model, optimizer, scaler, counters and RNG state."""

    def __init__(
        self,
        task: Task,
        config: Config,
        run_dir: Path,
        train_loader: DataLoader,
        val_loader: DataLoader,
        device: torch.device,
    ) -> None:
        check_cpu_bf16(config.train.cpu_bf16, device)
        self.task = task.to(device)
        if config.train.channels_last:
            channels_last_(self.task)
        if config.train.compile:
            self.task.network.compile()  # in place: the state dict keeps its keys
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.device = device
        self.hooks: list[Hook] = []
        if dist.is_initialized():
            ids = [device.index] if device.type == "cuda" else None
            self.task.network = DistributedDataParallel(
                self.task.network, device_ids=ids, find_unused_parameters=task.ddp_find_unused_parameters
            )
        self.encoder = self._encoder_parameters(task, config)
        self.optimizer = build_optimizer(config, self._parameter_groups(task))
        self.use_amp = config.train.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.epoch = 0
        self.global_step = 0
        self.samples_seen = 0  # training samples (crops, slices) over every process
        self.elapsed_s = 0.0
        self.epoch_start = 0.0  # perf_counter() at the start of the current epoch
        self.best_metric = -1.0
        self.best_epoch = -1
        self.preview: dict[str, torch.Tensor] | None = None
        self.validation_s: float | None = None  # the last validation's duration (train.val_every=0)
        self.trained_since_validation_s = 0.0

    @staticmethod
    def _encoder_parameters(task: Task, config: Config) -> list[torch.nn.Parameter]:
        train = config.train
        if not (train.freeze_encoder_epochs or train.encoder_lr_scale != 1.0):
            return []
        encoder = task.encoder_parameters()
        if not encoder:
            raise MedsegError(
                "config keys 'train.freeze_encoder_epochs'/'train.encoder_lr_scale' need a network with a "
                f"pretrainable encoder (unetr, swin_unetr); network '{config.model.network}' has none"
            )
        return encoder

    def _parameter_groups(self, task: Task) -> list[dict]:
        """One group, or the encoder in its own group at ``train.encoder_lr_scale`` times the learning rate.
        Parameters frozen at construction (e.g. unused norms) stay out of the optimizer."""
        encoder_ids = {id(p) for p in self.encoder}
        rest = [p for p in task.parameters() if p.requires_grad and id(p) not in encoder_ids]
        if not self.encoder:
            return [{"params": rest}]
        return [{"params": rest}, {"params": self.encoder, "lr_scale": self.config.train.encoder_lr_scale}]

    def _set_encoder_frozen(self) -> None:
        """The encoder learns from epoch ``train.freeze_encoder_epochs`` on (the heads adapt first)."""
        frozen = self.epoch < self.config.train.freeze_encoder_epochs
        for parameter in self.encoder:
            parameter.requires_grad_(not frozen)

    # -- checkpoints -------------------------------------------------------------------------------
    def _model_state(self) -> dict:
        state = self.task.state_dict()
        return {k.replace("network.module.", "network.", 1): v for k, v in state.items()}

    def _state(self) -> dict:
        return {
            "config": config_to_dict(self.config),
            "model": self._model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "samples_seen": self.samples_seen,
            "elapsed_s": self.elapsed_s,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "rng_torch": torch.get_rng_state(),
        }

    def resume(self, path: Path) -> None:
        state = load_checkpoint(path)
        network = self.task.network
        target = network.module if isinstance(network, DistributedDataParallel) else network
        target.load_state_dict({k[len("network."):]: v for k, v in state["model"].items() if k.startswith("network.")})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
        self.samples_seen = int(state.get("samples_seen", 0))  # absent from checkpoints before it was counted
        self.elapsed_s = float(state["elapsed_s"])
        self.best_metric, self.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        torch.set_rng_state(state["rng_torch"])

    def _save_snapshot(self) -> None:
        """The weights and counters at this step (``snapshots/step_<N>.pt``), for comparisons at an equal
        number of steps; no optimizer state (a snapshot is scored, not resumed)."""
        elapsed = self.elapsed_s + time.perf_counter() - self.epoch_start
        save_checkpoint(self.run_dir / "snapshots" / f"step_{self.global_step:07d}.pt", {
            "config": config_to_dict(self.config), "model": self._model_state(), "epoch": self.epoch,
            "global_step": self.global_step, "samples_seen": self.samples_seen, "elapsed_s": elapsed,
        })

    # -- loop --------------------------------------------------------------------------------------
    def _to_device(self, batch: dict) -> dict:
        """Plain tensors on the device (MetaTensor's per-operation bookkeeping slows every network op),
        images in the network's memory format."""
        moved = {k: v.as_subclass(torch.Tensor).to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                 for k, v in batch.items()}
        if self.config.train.channels_last and torch.is_tensor(moved.get("image")):
            moved["image"] = channels_last_input(moved["image"])
        return moved

    def _set_epoch_randomness(self) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        seed = self.config.train.seed * 100_003 + self.epoch + rank * 7_919_000
        seed_everything(seed)
        dataset = self.train_loader.dataset
        transform = getattr(dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=seed % 2**32)
        sampler = self.train_loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        generator = getattr(sampler, "generator", None)
        if generator is not None:
            generator.manual_seed(seed)

    @property
    def _bar_disabled(self) -> bool | None:
        """None lets tqdm hide bars when stderr is not a terminal (cluster logs keep the epoch lines)."""
        return None if self.config.train.progress and is_main_process() else True

    def _train_epoch(self) -> dict[str, float]:
        self.task.train()
        accumulate = max(1, self.config.train.grad_accumulation)
        totals: dict[str, float] = {}
        steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch}", leave=False,
                   disable=self._bar_disabled)
        for i, batch in enumerate(bar):
            batch = self._to_device(batch)
            with autocast(self.device, self.use_amp, self.config.train.cpu_bf16):
                losses = self.task.training_step(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise MedsegError(f"training loss became {loss.item()} at epoch {self.epoch}, step {i}; "
                                  "lower train.lr or set train.grad_clip")
            self.scaler.scale(loss / accumulate).backward()
            self.samples_seen += batch_items(batch) * (dist.get_world_size() if dist.is_initialized() else 1)
            if (i + 1) % accumulate == 0 or i + 1 == len(self.train_loader):
                finite = True
                if self.config.train.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    norm = torch.nn.utils.clip_grad_norm_(self.task.parameters(), self.config.train.grad_clip)
                    # Without a GradScaler (CPU, bf16 or fp32) nothing else skips a step whose gradient
                    # overflowed, and clipping an infinite norm writes NaN into every weight.
                    finite = self.scaler.is_enabled() or bool(torch.isfinite(norm))
                if finite:
                    self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step += 1
                if self.global_step in self.config.train.snapshot_steps and is_main_process():
                    self._save_snapshot()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach())
            steps += 1
            bar.set_postfix(loss=f"{totals['loss'] / steps:.4f}")
        return {f"train_{k}": v / max(steps, 1) for k, v in totals.items()}

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Per-class Dice (keys ``dice*``, [N, classes] per batch) averaged over cases; any other
        figure the task returns (e.g. pretraining losses) averaged as ``val_<key>``."""
        self.task.eval()
        scores: dict[str, list[torch.Tensor]] = {}
        bar = tqdm(self.val_loader, desc="validation", leave=False,
                   disable=self._bar_disabled)
        for i, batch in enumerate(bar):
            batch = self._to_device(batch)
            out = self.task.validation_step(batch)
            for key, value in out.items():
                if key != "labels":
                    scores.setdefault(key, []).append(value.detach().float().cpu().reshape(-1, *value.shape[1:]))
            if i == 0:
                self.preview = self.task.preview_images(batch, out)
        names = self.task.score_names
        logs = {}
        for key, values in scores.items():
            if key.startswith("dice"):  # "dice" (the prediction), e.g. "dice_axis2" (a part of it)
                per_class = torch.nanmean(torch.cat(values), dim=0)
                suffix = key[len("dice"):]
                logs.update({f"val_dice{suffix}_{name}": float(d) for name, d in zip(names, per_class)})
                logs[f"val_mean_dice{suffix}"] = float(torch.nanmean(per_class))
            else:
                logs[f"val_{key}"] = float(torch.cat(values).mean())
        return logs

    def _validation_due(self) -> bool:
        """Every ``val_every`` epochs; with 0, once the training since the last validation took
        ``VALIDATION_TIME_RATIO`` times that validation (the first epoch validates, to measure it)."""
        every = self.config.train.val_every
        if every:
            return (self.epoch + 1) % every == 0
        return self.validation_s is None or self.trained_since_validation_s >= VALIDATION_TIME_RATIO * self.validation_s

    def _improves(self, value: float) -> bool:
        if self.best_epoch < 0:
            return True
        return value > self.best_metric if self.task.monitor_mode == "max" else value < self.best_metric

    def _budget_spent(self) -> bool:
        minutes = self.config.train.max_minutes
        return bool(minutes and self.elapsed_s >= 60.0 * minutes)

    def fit(self, hooks: Sequence[Hook] = (), resume: bool = False, log: Callable[[str], None] = print) -> FitResult:
        """Train until ``max_epochs`` or the end of the epoch that crosses ``max_minutes``."""
        self.hooks = list(hooks)
        if resume:
            self.resume(self.run_dir / "last.pt")
            log(f"resumed from {self.run_dir / 'last.pt'} at epoch {self.epoch}")
        train = self.config.train
        first_epoch = self.epoch
        while self.epoch < train.max_epochs and not self._budget_spent():
            start = self.epoch_start = time.perf_counter()
            self._set_epoch_randomness()
            self._set_encoder_frozen()
            lr = learning_rate(self.config, self.epoch, self.elapsed_s)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            logs = {"lr": lr, **self._train_epoch()}
            last = self.epoch + 1 == train.max_epochs
            minutes = train.max_minutes
            crossing = bool(minutes and self.elapsed_s + time.perf_counter() - start >= 60.0 * minutes)
            self.trained_since_validation_s += time.perf_counter() - start
            if validate := self._validation_due() or last or crossing:
                validation_start = time.perf_counter()
                logs.update(self._validate())
                self.validation_s, self.trained_since_validation_s = time.perf_counter() - validation_start, 0.0
            self.elapsed_s += time.perf_counter() - start
            logs.update(elapsed_min=self.elapsed_s / 60.0, step=self.global_step, samples_seen=self.samples_seen)
            self.epoch += 1
            if validate and self._improves(logs[self.task.monitor]):
                self.best_metric, self.best_epoch = logs[self.task.monitor], self.epoch - 1
                if is_main_process():
                    save_checkpoint(self.run_dir / "best.pt", self._state())
            if is_main_process():
                save_checkpoint(self.run_dir / "last.pt", self._state())
                for hook in self.hooks:
                    hook.after_epoch(self.epoch - 1, logs, self.task, self.preview if validate else None)
                monitor = self.task.monitor
                shown = f" {monitor.replace('_', ' ')} {logs[monitor]:.4f}" if validate else ""
                log(f"epoch {self.epoch - 1}: loss {logs['train_loss']:.4f}{shown} lr {lr:.2e} "
                    f"({self.elapsed_s / 60:.1f} min)")
        for hook in self.hooks:
            hook.after_train()
        if self.best_epoch < 0 and is_main_process() and self.epoch > first_epoch:
            save_checkpoint(self.run_dir / "best.pt", self._state())
        return FitResult(self.best_metric, self.best_epoch, self.epoch - first_epoch, self.elapsed_s)


def distributed_device() -> torch.device:
    """Join the torchrun process group when launched by torchrun; else pick CUDA when present."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
