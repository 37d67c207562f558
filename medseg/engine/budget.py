"""What a training run spent, read back from its run folder: the figures every equal-budget comparison
prints beside its metric (steps, samples seen, seconds per step, parameters) and its learning curve.

A method that is slow per step but learns much per step looks poor at an equal number of minutes and
good at an equal number of steps; printing both, with the curve, keeps a comparison from measuring the
budget instead of the method.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from medseg.errors import MedsegError


@dataclass(frozen=True)
class RunBudget:
    """Steps, samples and seconds of training (validation included, as the budget counts it)."""

    steps: int
    samples_seen: int
    train_seconds: float
    parameters: int

    @property
    def seconds_per_step(self) -> float:
        return self.train_seconds / self.steps if self.steps else math.nan

    def figures(self) -> dict[str, float]:
        """The columns a comparison table prints beside its metric."""
        return {"steps": self.steps, "samples_seen": self.samples_seen, "s_per_step": self.seconds_per_step,
                "train_seconds": self.train_seconds, "parameters": self.parameters}


def run_budget(state: dict, parameters: int) -> RunBudget:
    """The budget a checkpoint (``last.pt`` or a snapshot) records; ``parameters`` of its network."""
    return RunBudget(steps=int(state["global_step"]), samples_seen=int(state.get("samples_seen", 0)),
                     train_seconds=float(state["elapsed_s"]), parameters=parameters)


def learning_curve(run_dir: str | Path, metric: str = "val_mean_dice", x: str = "step") -> list[tuple[float, float]]:
    """``(x, metric)`` at every validation of a run, from its ``train_log.jsonl``; ``x`` is ``step``
    (optimiser steps), ``samples_seen`` or ``elapsed_min``."""
    path = Path(run_dir) / "train_log.jsonl"
    if not path.is_file():
        raise MedsegError(f"{path}: no training log")
    curve = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise MedsegError(f"{path}: line {number} is not JSON") from None
        if metric in entry and x in entry:
            curve.append((float(entry[x]), float(entry[metric])))
    return curve
