"""What a report reads from a run folder: the resolved config, the split, the training log and the
final validation's per-case scores, each checked so that a wrong folder is one clear error."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import MedsegError

LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.json"
CASE_SCORES = Path("validation") / "metrics.csv"
PREDICTIONS = Path("validation") / "predictions"


@dataclass
class RunRecord:
    """One training run as a report shows it."""

    folder: Path
    config: dict[str, Any]
    config_text: str
    split: dict[str, list[str]]
    log: list[dict[str, Any]]
    case_dice: dict[str, dict[str, float]]  # case -> class -> Dice (NaN where not scored)

    @property
    def name(self) -> str:
        return self.folder.resolve().name

    @property
    def class_names(self) -> list[str]:
        """Foreground classes, in label order."""
        return list((self.config.get("data") or {}).get("class_names") or [])[1:]

    def mean_dice(self, case: str) -> float:
        values = [v for v in self.case_dice[case].values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None


def _training_log(path: Path) -> list[dict[str, Any]]:
    rows = []
    lines = _read_text(path).splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # a run stopped while writing its last line
                break
            raise MedsegError(f"{path}: line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise MedsegError(f"{path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def _case_scores(path: Path) -> dict[str, dict[str, float]]:
    """Per-case Dice from the final validation's CSV (empty when the run never finished one)."""
    if not path.is_file():
        return {}
    scores: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                scores[row["case"]] = {key.removeprefix("dice_"): float(value or "nan")
                                       for key, value in row.items() if key.startswith("dice_")}
            except (KeyError, ValueError):
                raise MedsegError(f"{path}: not a per-case metrics table (a 'case' column, dice_* numbers)") from None
    return scores


def read_run(folder: str | Path) -> RunRecord:
    """A run folder written by ``medseg train``; a clear error for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MedsegError(f"{folder}: run folder not found")
    for name in (CONFIG_FILE, LOG_FILE):
        if not (folder / name).is_file():
            raise MedsegError(f"{folder}: not a training run folder (no {name}); give a folder 'medseg train' wrote")
    config_text = _read_text(folder / CONFIG_FILE)
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        raise MedsegError(f"{folder / CONFIG_FILE}: not valid YAML") from None
    if not isinstance(config, dict):
        raise MedsegError(f"{folder / CONFIG_FILE}: not a config mapping")
    split: dict[str, list[str]] = {}
    if (folder / SPLIT_FILE).is_file():
        try:
            split = json.loads(_read_text(folder / SPLIT_FILE))
        except json.JSONDecodeError:
            raise MedsegError(f"{folder / SPLIT_FILE}: not valid JSON") from None
    return RunRecord(folder, config, config_text, split, _training_log(folder / LOG_FILE),
                     _case_scores(folder / CASE_SCORES))
