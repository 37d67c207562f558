"""``medseg pretrain``: unlabelled volumes -> a Swin UNETR encoder, trained by the same Trainer.

The run folder mirrors a training run (config.yaml, split.json, best.pt, last.pt, train_log.jsonl,
tensorboard/); best.pt has the lowest validation loss. Fine-tune with ``model.pretrained=RUN_DIR``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from medseg.config import Config, load_config
from medseg.data.checks import check_headers
from medseg.data.datasets import Case, discover_dataset, list_inputs
from medseg.data.planning import plan_unlabelled
from medseg.data.splits import make_split
from medseg.data.transforms import preprocessing
from medseg.engine.loaders import make_loaders
from medseg.engine.run_folder import new_run_dir, open_run_folder, rank_zero_log, read_run_to_resume
from medseg.engine.trainer import Trainer, distributed_device
from medseg.errors import MedsegError
from medseg.ssl.task import SwinPretrainer


def find_unlabelled_images(folders: Sequence[str | Path]) -> tuple[list[Path], str | None]:
    """Images of every folder: a dataset in any layout medseg reads (its labels ignored), or a plain
    folder of images. Returns them with the modality the datasets declare (None if none or mixed)."""
    images: list[Path] = []
    declared: set[str | None] = set()
    for folder in map(Path, folders):
        if (folder / "dataset.json").is_file() or (folder / "imagesTr").is_dir():
            dataset = discover_dataset(folder, require_labels=False)
            images += [c.image for c in dataset.cases]
            declared.add(dataset.modality)
        else:
            images += list_inputs(folder)
            declared.add(None)
    unique = sorted({image.resolve() for image in images})
    if len(unique) < 2:
        raise MedsegError(f"{', '.join(map(str, folders))}: pretraining needs at least 2 images, found {len(unique)}")
    return unique, declared.pop() if len(declared) == 1 else None


def _prepare_new(config_path: str | Path | None, data_dirs: Sequence[str | Path] | None, output: str | Path | None,
                 overrides: list[str] | None) -> tuple[Config, dict, Path]:
    config = load_config(config_path, overrides, command="pretrain")
    folders = list(data_dirs or ([config.data.root] if config.data.root else []))
    if not folders:
        raise MedsegError("no images: pass --data DIR [DIR ...] or set data.root in the config")
    run_dir = new_run_dir(output, config.name)
    images, declared = find_unlabelled_images(folders)
    images = images[: config.data.max_cases] if config.data.max_cases else images
    check_headers([Case(image.name, image, None) for image in images], None)
    d = config.data
    split = make_split([str(i) for i in images], d.val_fraction, d.num_folds, d.fold, d.split_seed)
    root = str(Path(folders[0]).resolve())
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root, class_names=None))
    config = plan_unlabelled(config, [Path(p) for p in split["train"]], declared)
    return config, split, run_dir


def pretrain(
    config_path: str | Path | None,
    data_dirs: Sequence[str | Path] | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Self-supervised pretraining of the Swin UNETR encoder; returns the run folder."""
    device = distributed_device()
    log = rank_zero_log(log)
    if resume:
        config, split, run_dir = read_run_to_resume(output, overrides, command="pretrain")
    else:
        config, split, run_dir = _prepare_new(config_path, data_dirs, output, overrides)
    torch.manual_seed(config.train.seed)
    task = SwinPretrainer(config)
    log(f"{len(split['train'])} training and {len(split['validation'])} validation images "
        f"({config.data.modality}, spacing {config.data.spacing}); caching preprocessed volumes")
    steps = preprocessing(config.data, with_label=False)
    train_loader, val_loader = make_loaders(
        config, [{"image": p} for p in split["train"]], [{"image": p} for p in split["validation"]],
        steps + task.train_sampling(), steps + task.validation_sampling(), val_batch_size=config.train.batch_size,
    )
    trainer = Trainer(task, config, run_dir, train_loader, val_loader, device)
    hooks = open_run_folder(run_dir, config, split, log)
    result = trainer.fit(hooks, resume=resume, log=log)
    log(f"best validation loss {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"({result.epochs_run} epochs, {result.elapsed_s / 60:.1f} min); fine-tune with model.pretrained={run_dir}")
    return run_dir
