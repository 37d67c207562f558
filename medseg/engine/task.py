"""The task protocol the Trainer drives: 3D strategies, self-supervised pretraining and 2D models alike.

The Trainer knows nothing else about what it trains: a task turns a batch into named losses, a
validation batch into figures, names the figure that picks ``best.pt``, and draws its own pictures.
Hyperparameters come from the config, never from subclasses.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn


class Task(nn.Module):
    """What one training run optimises.

    ``network`` holds every trained parameter the Trainer may wrap for DDP; tasks call it through
    ``self.network`` so that the wrapper sees every forward pass. A network that has a pretrainable
    encoder exposes it as ``network.encoder`` (the segmentation_models_pytorch convention), which is
    what ``train.freeze_encoder_epochs`` and ``train.encoder_lr_scale`` act on.
    """

    network: nn.Module
    ddp_find_unused_parameters = False  # True where a batch may not touch every parameter
    monitor, monitor_mode = "val_mean_dice", "max"  # the validation figure that picks best.pt

    @property
    def device(self) -> torch.device:
        """Where the task's tensors live (an exported network may hold buffers only)."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

    @property
    def score_names(self) -> list[str]:
        """Names of the columns of the ``dice*`` figures ``validation_step`` returns (foreground classes)."""
        return []

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters of ``network.encoder`` (also under DDP); none when the network has no encoder."""
        network = getattr(self.network, "module", self.network)
        encoder = getattr(network, "encoder", None)
        return list(encoder.parameters()) if isinstance(encoder, nn.Module) else []

    def training_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Loss terms for one batch; must hold ``"loss"``, the value that is minimised."""
        raise NotImplementedError

    def validation_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """Figures of one validation batch, each [N, ...] over its N items. Keys starting with ``dice``
        are per-class Dice [N, len(score_names)] (NaN where a class is absent from both sides); any
        other key is averaged as ``val_<key>``."""
        raise NotImplementedError

    def preview_images(self, batch: dict, outputs: dict) -> dict[str, torch.Tensor]:
        """TensorBoard pictures (tag -> RGB [3, H, W]) of the first validation batch; none by default."""
        return {}
