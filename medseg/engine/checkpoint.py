"""Checkpoints: plain dicts of tensors and primitives, saved atomically, loaded with weights_only=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.errors import MedsegError
from medseg.io import atomic_output

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_output(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)


def load_tensors(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` (no pickled code runs); failures are user errors."""
    path = Path(path)
    if not path.is_file():
        raise MedsegError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise MedsegError(f"{path}: cannot load {what}: not a file of plain tensors that "
                          "torch.load(weights_only=True) accepts (no pickled code is run)") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load without running pickled code; anything that is not a medseg checkpoint is a user error."""
    state = load_tensors(path)
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise MedsegError(f"{path}: not a medseg checkpoint (no model state or config)")
    return state
