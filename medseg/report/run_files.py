"""What the results page reads from a run folder, and the copy of it that is kept: configs, training
logs and held-out scores, never weights or predictions, so that ``docs/runs`` stays small and every
published figure can be traced to the files it came from."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import MedsegError
from medseg.report.runs import read_run

KEPT_FILES = ("config.yaml", "plan.yaml", "split.json", "train_log.jsonl", "validation/metrics.json",
              "results.csv", "results_equal_steps.csv", "results.json", "peer_results.json", "probe.json")
KEPT_PATTERNS = ("scores/*/metrics.json", "*/config.yaml", "*/plan.yaml", "*/split.json", "*/train_log.jsonl",
                 "*/validation/metrics.json", "folds/*/config.yaml", "folds/*/train_log.jsonl")


def keep_run(source: Path, target: Path) -> list[Path]:
    """Copy the small files of a run folder (configs, logs, scores; never weights or predictions)."""
    if not source.is_dir():
        raise MedsegError(f"{source}: run folder not found")
    if target.exists():
        raise MedsegError(f"{target}: already exists; keep a run under a new name")
    files = [source / name for name in KEPT_FILES if (source / name).is_file()]
    files += [path for pattern in KEPT_PATTERNS for path in sorted(source.glob(pattern)) if path.is_file()]
    if not files:
        raise MedsegError(f"{source}: no run files (config.yaml, train_log.jsonl, results) to keep")
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    return files


@dataclass
@dataclass
class RunFigures:
    """A training run's held-out scores and what its budget bought."""

    label: str
    dice: dict[str, float]  # class -> held-out Dice
    mean_dice: float
    mean_hd95: float | None
    cases: int
    steps: int
    samples: int
    minutes: float  # training and validation wall time
    budget_minutes: float | None
    curve: list[tuple[int, float]]  # (step, validation mean Dice during training)

    @property
    def seconds_per_step(self) -> float:
        return self.minutes * 60 / self.steps if self.steps else math.nan


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None
    except json.JSONDecodeError:
        raise MedsegError(f"{path}: not valid JSON") from None


def crops_per_step(config: dict[str, Any]) -> int:
    """Training samples in one optimiser step: the batch's images times the crops taken from each."""
    return int((config.get("train") or {}).get("batch_size", 0)) * int(
        (config.get("data") or {}).get("samples_per_volume", 1))


def run_figures(label: str, folder: Path, scores: Path | None = None) -> RunFigures:
    """Held-out scores (``validation/metrics.json`` or ``scores``) and the budget columns of a run folder.

    Logs written before the Trainer recorded steps give them as epochs x iterations per epoch, which is
    what the Trainer runs (a time limit is checked between epochs)."""
    run = read_run(folder)
    if not run.log:
        raise MedsegError(f"{folder / 'train_log.jsonl'}: empty; the run trained no epoch")
    train = run.config.get("train") or {}

    def step_of(row: dict[str, Any]) -> int:
        return int(row.get("step", (row["epoch"] + 1) * train.get("iterations_per_epoch", 0)))

    last = run.log[-1]
    steps = step_of(last)
    samples = int(last.get("samples_seen", steps * crops_per_step(run.config)))
    metrics = read_json(scores or folder / "validation" / "metrics.json")
    dice = {name: math.nan if values["dice"] is None else float(values["dice"])
            for name, values in metrics["per_class"].items()}
    curve = [(step_of(row), float(row["val_mean_dice"])) for row in run.log if "val_mean_dice" in row]
    return RunFigures(label, dice, float(metrics["mean_dice"]), metrics.get("mean_hd95"), int(metrics["num_cases"]),
                      steps, samples, float(last["elapsed_min"]), train.get("max_minutes"), curve)


NEAR_STEP = 0.75  # a validation counts as "at" a step count when it is at least this fraction of it


def dice_at_step(run: RunFigures, step: int) -> tuple[int, float] | None:
    """The last validation during training at or before ``step``, if it is near it (none: the run did not
    validate between ``NEAR_STEP * step`` and ``step``)."""
    earlier = [point for point in run.curve if NEAR_STEP * step <= point[0] <= step]
    return earlier[-1] if earlier else None
