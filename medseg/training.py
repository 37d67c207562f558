"""``medseg train``: config + dataset -> planned config, split, data loaders, Trainer, run folder.

Everything that can fail on user input (config keys, dataset layout, headers, unreadable or
out-of-range files met while caching) fails before the run folder is created.
"""

from __future__ import annotations

import dataclasses
import sys
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose
from torch.utils.data import RandomSampler
from torch.utils.data.distributed import DistributedSampler

from medseg.checks import check_case
from medseg.config import Config, config_from_dict, load_config, save_config
from medseg.data.datasets import Case, discover_dataset
from medseg.data.planning import plan
from medseg.data.splits import make_split
from medseg.data.transforms import preprocessing
from medseg.engine.hooks import Hook, LogFileHook, TensorBoardHook
from medseg.engine.trainer import Trainer, distributed_device, is_main_process
from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.ssl.transfer import load_pretrained_encoder
from medseg.strategies import Segmenter, build_segmenter


def _items(cases: list[Case]) -> list[dict]:
    return [{"image": str(c.image), "label": str(c.label), "case_id": c.case_id} for c in cases]


def make_loaders(config: Config, train_items: list[dict], val_items: list[dict], train_transforms: list,
                 val_transforms: list, val_batch_size: int = 1) -> tuple[DataLoader, DataLoader]:
    """Cached datasets (everything before the first random transform is computed once) and loaders
    whose sampling the Trainer re-seeds every epoch."""
    data, train = config.data, config.train
    cache_rate = 1.0 if data.cache else 0.0
    progress = train.progress and is_main_process() and sys.stderr.isatty()
    train_ds = CacheDataset(train_items, Compose(train_transforms), cache_rate=cache_rate, progress=progress)
    val_ds = CacheDataset(val_items, Compose(val_transforms), cache_rate=cache_rate, progress=progress)
    generator = torch.Generator()  # re-seeded every epoch by the Trainer (per rank under DDP)
    if train.iterations_per_epoch:
        sampler = RandomSampler(train_ds, replacement=True, num_samples=train.iterations_per_epoch * train.batch_size,
                                generator=generator)
    elif torch.distributed.is_initialized():
        sampler = DistributedSampler(train_ds, seed=train.seed)
    else:
        sampler = RandomSampler(train_ds, generator=generator)
    train_loader = DataLoader(train_ds, batch_size=train.batch_size, sampler=sampler, num_workers=data.num_workers,
                              drop_last=len(train_ds) >= train.batch_size)
    return train_loader, DataLoader(val_ds, batch_size=val_batch_size, num_workers=0)


def _loaders(config: Config, segmenter: Segmenter, train_cases: list[Case], val_cases: list[Case]):
    deterministic = preprocessing(config.data) + segmenter.grid_transforms(with_label=True)
    return make_loaders(config, _items(train_cases), _items(val_cases), deterministic + segmenter.train_sampling(),
                        deterministic)


def check_headers(cases: list[Case], num_classes: int | None) -> None:
    """Header-only checks of every case before anything is written: the first problem, as one line."""
    problems = [p for case in cases for p in check_case(case, num_classes, read_voxels=False)]
    if problems:
        more = f" (and {len(problems) - 1} more problems; run 'medseg check')" if len(problems) > 1 else ""
        raise MedsegError(problems[0] + more)


def new_run_dir(output: str | Path | None, name: str) -> Path:
    run_dir = Path(output) if output else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise MedsegError(f"{run_dir}: run folder exists and is not empty; use --resume to continue it or another --output")
    return run_dir


def write_json(path: Path, value) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2))


def _prepare_new(config_path, data_dir, output, overrides) -> tuple[Config, dict, Path, dict[str, Case]]:
    config = load_config(config_path, overrides)
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data_dir)))
    if not config.data.root:
        raise MedsegError("no dataset: pass --data DIR or set data.root in the config")
    dataset = discover_dataset(config.data.root)
    # Absolute, so the saved config still finds the data when resumed from another folder.
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(dataset.root.resolve())))
    cases = dataset.cases[: config.data.max_cases] if config.data.max_cases else dataset.cases
    check_headers(cases, len(dataset.class_names) if dataset.class_names else None)
    d = config.data
    split = make_split([c.case_id for c in cases], d.val_fraction, d.num_folds, d.fold, d.split_seed, d.train_fraction)
    by_id = {c.case_id: c for c in cases}
    config = plan(config, dataset, [by_id[i] for i in split["train"]])
    if config.model.pretrained:  # absolute, like data.root
        config.model.pretrained = str(Path(config.model.pretrained).resolve())
    return config, split, new_run_dir(output, config.name), by_id


def read_run_to_resume(output, overrides) -> tuple[Config, dict, Path]:
    """The saved config (with overrides) and split of a run folder that has a last checkpoint."""
    if output is None:
        raise MedsegError("--resume needs --output RUN_DIR, the run folder to continue")
    run_dir = Path(output)
    for name in ("config.yaml", "split.json", "last.pt"):
        if not (run_dir / name).is_file():
            raise MedsegError(f"{run_dir / name}: not found; cannot resume this run folder")
    config = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), overrides)
    return config, json.loads((run_dir / "split.json").read_text()), run_dir


def _prepare_resume(output, overrides) -> tuple[Config, dict, Path, dict[str, Case]]:
    config, split, run_dir = read_run_to_resume(output, overrides)
    dataset = discover_dataset(config.data.root)
    return config, split, run_dir, {c.case_id: c for c in dataset.cases}


def open_run_folder(run_dir: Path, config: Config, split: dict, log: Callable[[str], None]) -> list[Hook]:
    """Once every rank has checked its inputs, rank 0 creates the run folder with the resolved config and
    the split; returns the logging hooks (none on other ranks)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    log(f"run folder: {run_dir}")
    if not is_main_process():
        return []
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / "split.json", split)
    return [LogFileHook(run_dir / "train_log.jsonl"), TensorBoardHook(run_dir / "tensorboard")]


def train(
    config_path: str | Path | None,
    data_dir: str | Path | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train a model; returns the run folder (config.yaml, split.json, best.pt, last.pt, logs)."""
    overrides = list(overrides or [])
    device = distributed_device()
    if not is_main_process():
        log = lambda _: None  # noqa: E731  (one log, from rank 0)
    if resume:
        config, split, run_dir, by_id = _prepare_resume(output, overrides)
    else:
        config, split, run_dir, by_id = _prepare_new(config_path, data_dir, output, overrides)
    missing = [i for i in split["train"] + split["validation"] if i not in by_id]
    if missing:
        raise MedsegError(f"{config.data.root}: split names cases that are not in the dataset: {', '.join(missing[:5])}")
    torch.manual_seed(config.train.seed)
    segmenter = build_segmenter(config)
    if config.model.pretrained and not resume:  # a resumed run has the weights in its checkpoint
        log(str(load_pretrained_encoder(segmenter.network, config.model.pretrained)))
    train_cases = [by_id[i] for i in split["train"]]
    val_cases = [by_id[i] for i in split["validation"]]
    log(f"{len(train_cases)} training and {len(val_cases)} validation cases; caching preprocessed volumes")
    train_loader, val_loader = _loaders(config, segmenter, train_cases, val_cases)
    hooks = open_run_folder(run_dir, config, split, log)
    trainer = Trainer(segmenter, config, run_dir, train_loader, val_loader, device, hooks)
    result = trainer.fit(resume=resume, log=log)
    log(f"best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"({result.epochs_run} epochs, {result.elapsed_s / 60:.1f} min)")
    if config.train.final_validation and is_main_process():
        from medseg.evaluation import evaluate_cases, format_table
        from medseg.inference import Predictor

        predictor = Predictor(run_dir, device=device.type)
        pred_dir = run_dir / "validation" / "predictions"
        predictor.predict_files([c.image for c in val_cases], pred_dir, overwrite=True, progress=config.train.progress, log=log)
        evaluation = evaluate_cases(
            [(c.case_id, pred_dir / f"{c.case_id}.nii.gz", c.label) for c in val_cases],
            class_names=dict(enumerate(config.data.class_names[1:], start=1)),
            output_json=run_dir / "validation" / "metrics.json",
        )
        log("validation cases, original geometry:\n" + format_table(evaluation))
    return run_dir
