"""k-fold cross-validation: one run folder per fold under one parent (``PARENT/fold_<k>``), for an
ensemble (``medseg infer --model PARENT``) or one fold per array task.

Every fold shares one configuration: the first fold trained is planned (or configured) as usual, and
each later fold takes that fold's resolved ``config.yaml`` with only ``data.fold`` changed. All folds
then preprocess alike, so an ensemble averages their probabilities on one grid. A fold trained on its
own later (``--folds 3``) does the same when a trained fold already exists under the parent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.inference.ensemble import FOLD_PREFIX, fold_run_dirs
from medseg.workflows.training import train


def parse_folds(text: str, num_folds: int) -> list[int]:
    """``all`` or comma-separated fold indices, each in 0..num_folds-1."""
    if num_folds < 2:
        raise MedsegError(f"--folds needs data.num_folds of at least 2 (in the config or as "
                          f"data.num_folds=5), got {num_folds}")
    if text.strip() == "all":
        return list(range(num_folds))
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MedsegError(f"--folds: 'all' or fold numbers separated by commas, got '{text}'") from None
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad or not folds or len(set(folds)) != len(folds):
        raise MedsegError(f"--folds: distinct folds in 0..{num_folds - 1} (data.num_folds={num_folds}), got '{text}'")
    return folds


def trained_folds(parent: Path) -> list[Path]:
    """The fold run folders under ``parent`` that hold a checkpoint, in fold order."""
    return [p for p in fold_run_dirs(parent) if (p / "last.pt").is_file()]


def train_folds(config_path: str | Path | None, folds: str, data_dir: str | Path | None, output: str | Path | None,
                resume: bool = False, overrides: list[str] | None = None,
                log: Callable[[str], None] = print) -> list[Path]:
    """Train the chosen folds into ``output/fold_<k>``; with ``resume``, folds that have a checkpoint
    continue and the others start. Returns the fold run folders."""
    if output is None:
        raise MedsegError("--folds needs --output PARENT: the folder that holds one run folder per fold")
    parent = Path(output)
    overrides = list(overrides or [])
    existing = trained_folds(parent)
    if resume and not existing:
        raise MedsegError(f"{parent}: no trained fold to resume (no {FOLD_PREFIX}<k>/last.pt)")
    if existing:  # the folds already trained fix the configuration, the number of folds included
        shared: str | Path | None = existing[0] / "config.yaml"
        num_folds = load_config(shared, overrides).data.num_folds
    else:
        shared = config_path
        num_folds = load_config(config_path, overrides).data.num_folds
    chosen = parse_folds(folds, num_folds)
    runs = []
    for fold in chosen:
        run_dir = parent / f"{FOLD_PREFIX}{fold}"
        log(f"fold {fold} of {num_folds}: {run_dir}")
        if (run_dir / "last.pt").is_file():
            if not resume:
                raise MedsegError(f"{run_dir}: fold already trained; pass --resume to continue it")
            runs.append(train(None, output=run_dir, resume=True, overrides=overrides, log=log))
            continue
        runs.append(train(shared, data_dir=data_dir, output=run_dir, overrides=[*overrides, f"data.fold={fold}"],
                          log=log))
        if shared is config_path:  # the first fold trained: the rest take its resolved configuration
            shared = run_dir / "config.yaml"
    return runs
