"""Run folders: the one place that names, creates, reads back and resumes them, for every command.

A run folder holds ``config.yaml`` (the resolved config of its command), ``split.json``, the
checkpoints ``last.pt``/``best.pt``, ``train_log.jsonl`` and ``tensorboard/``. It is created only after
a command has built everything that can fail on user input.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from medseg.config import Config, config_from_dict, save_config
from medseg.engine.hooks import Hook, LogFileHook, TensorBoardHook
from medseg.errors import MedsegError
from medseg.io import atomic_output


def is_main_process() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def rank_zero_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` on rank 0, silence on the other ranks: one log per run under DDP."""
    return log if is_main_process() else (lambda _: None)


def new_run_dir(output: str | Path | None, name: str) -> Path:
    """``output``, or ``runs/<name>-<time>``; refused when it exists with anything in it."""
    run_dir = Path(output) if output else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise MedsegError(
            f"{run_dir}: run folder exists and is not empty; use --resume to continue it or another --output"
        )
    return run_dir


def write_json(path: Path, value: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2), encoding="utf-8")


def read_run(run_dir: str | Path, overrides: list[str] | None = None,
             required: tuple[str, ...] = ("config.yaml", "split.json")) -> tuple[Config, dict]:
    """The saved config (with ``overrides``) and split of a run folder holding the ``required`` files."""
    run_dir = Path(run_dir)
    for name in required:
        if not (run_dir / name).is_file():
            raise MedsegError(f"{run_dir / name}: not found; cannot resume this run folder")
    config = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")), overrides)
    return config, json.loads((run_dir / "split.json").read_text(encoding="utf-8"))


CHECKPOINTED = ("config.yaml", "split.json", "last.pt")


def read_run_to_resume(output: str | Path | None, overrides: list[str] | None, command: str,
                       required: tuple[str, ...] = CHECKPOINTED) -> tuple[Config, dict, Path]:
    """The config, split and folder of a run of ``command`` that holds the ``required`` files (by default
    a last checkpoint to continue from)."""
    if output is None:
        raise MedsegError("--resume needs --output RUN_DIR, the run folder to continue")
    run_dir = Path(output)
    config, split = read_run(run_dir, overrides, required)
    if config.command != command:
        raise MedsegError(
            f"{run_dir}: a 'medseg {config.command}' run; resume it with 'medseg {config.command} --resume'"
        )
    return config, split, run_dir


def open_run_folder(run_dir: Path, config: Config, split: dict, log: Callable[[str], None]) -> list[Hook]:
    """Once every rank has checked its inputs, rank 0 creates the run folder with the resolved config and
    the split; returns the logging hooks (none on other ranks)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    log(f"run folder: {run_dir}")
    if not is_main_process():
        return []
    create_run_folder(run_dir, config, split)
    return logging_hooks(run_dir)


def create_run_folder(run_dir: Path, config: Config, split: dict) -> None:
    """The folder with the resolved config and the split (again, with its overrides, when resumed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / "split.json", split)


def logging_hooks(run_dir: Path) -> list[Hook]:
    """The hooks every run writes its log with (rank 0 only)."""
    if not is_main_process():
        return []
    return [LogFileHook(run_dir / "train_log.jsonl"), TensorBoardHook(run_dir / "tensorboard")]
