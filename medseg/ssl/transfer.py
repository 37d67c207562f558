"""Load a pretrained Swin encoder into Swin UNETR, from a ``medseg pretrain`` run or checkpoint, or
from the research code's released ``model_swinvit.pt`` (``{"state_dict": {"module.layers1.0...": ...}}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

from medseg.engine.checkpoint import load_tensors
from medseg.errors import MedsegError

ENCODER = "swinViT."
_ENCODER_PARTS = ("patch_embed", "layers1", "layers2", "layers3", "layers4")
# The research code's MLP names -> MONAI's.
_RENAMES = ((".mlp.fc1.", ".mlp.linear1."), (".mlp.fc2.", ".mlp.linear2."))


@dataclass
class TransferReport:
    """Counts of encoder tensors: loaded, left at their initialisation, and in the file but not used."""

    source: Path
    matched: int
    missing: list[str]
    unexpected: list[str]

    def __str__(self) -> str:
        return (f"pretrained encoder from {self.source}: {self.matched} tensors matched, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise MedsegError(
            f"{path}: pretrained weights not found (a pretraining run folder, its best.pt/last.pt, or model_swinvit.pt)"
        )
    state = load_tensors(path, "pretrained weights")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a medseg checkpoint
    elif isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the research code's layout
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise MedsegError(f"{path}: not a state dict of tensors")
    return state


def encoder_key(key: str) -> str | None:
    """The Swin UNETR encoder name of a saved tensor (``swinViT.`` removed), or None for other tensors."""
    for prefix in ("module.", "network.", "model."):
        key = key.removeprefix(prefix)
    key = key.replace("swin_vit.", ENCODER, 1) if key.startswith("swin_vit.") else key
    if key.startswith(ENCODER):
        key = key[len(ENCODER):]
    elif not key.startswith(_ENCODER_PARTS):
        return None
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def pretrained_window_size(path: str | Path) -> int:
    """The attention window the encoder in ``path`` was trained with, from the side of its relative
    position bias table, (2w - 1)^3 rows for a window of w: fine-tuning must use the same window."""
    path = Path(path)
    for key, value in _read_weights(path).items():
        name = encoder_key(key)
        if name is not None and name.endswith("relative_position_bias_table") and value.ndim == 2:
            side = round(value.shape[0] ** (1 / 3))
            if side ** 3 == value.shape[0] and side % 2 == 1:
                return (side + 1) // 2
            raise MedsegError(f"{path}: encoder tensor '{name}' has {value.shape[0]} rows, "
                              "not the (2w - 1)^3 of a cubic attention window")
    raise MedsegError(f"{path}: no Swin UNETR encoder tensors in this file")


def load_pretrained_encoder(network: nn.Module, path: str | Path) -> TransferReport:
    """Copy the encoder tensors of ``path`` into ``network.encoder``, a Swin transformer; shapes must agree
    (same size preset)."""
    path = Path(path)
    encoder = getattr(network, "encoder", None)
    if not isinstance(encoder, SwinTransformer):
        raise MedsegError(
            f"config key 'model.pretrained': {path} holds a Swin UNETR encoder; set model.network=swin_unetr"
        )
    own = encoder.state_dict()
    loaded, unexpected = {}, []
    for key, value in _read_weights(path).items():
        name = encoder_key(key)
        if name is None or name not in own:
            unexpected.append(key)
        elif own[name].shape != value.shape:
            raise MedsegError(
                f"{path}: encoder tensor '{name}' has shape {list(value.shape)}, "
                f"this Swin UNETR has {list(own[name].shape)}; "
                "fine-tune with the model.size, model.use_v2 and model.window_size the encoder was pretrained with"
            )
        else:
            loaded[name] = value
    if not loaded:
        raise MedsegError(f"{path}: no Swin UNETR encoder tensors in this file")
    encoder.load_state_dict(loaded, strict=False)
    missing = [key for key in own if key not in loaded]
    return TransferReport(path, len(loaded), missing, unexpected)
