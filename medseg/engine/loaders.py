"""Data loaders for the Trainer: cached datasets and samplers whose randomness the Trainer re-seeds."""

from __future__ import annotations

import sys

import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, Transform
from torch.utils.data import RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from medseg.config import Config
from medseg.engine.run_folder import is_main_process


def make_loaders(config: Config, train_items: list[dict], val_items: list[dict], train_transforms: list[Transform],
                 val_transforms: list[Transform], val_batch_size: int = 1,
                 sampling_copies: bool = False) -> tuple[DataLoader, DataLoader]:
    """Cached datasets (everything before the first random transform is computed once) and loaders
    whose sampling the Trainer re-seeds every epoch.

    ``sampling_copies``: the first random transform copies what it takes from the cached volume (e.g.
    a slice by ``index_select``), so the cache need not be deep-copied for every sample, which costs
    more than a small 2D training step. Crops that may be views keep MONAI's copy (the default)."""
    data, train = config.data, config.train
    cache_rate = 1.0 if data.cache else 0.0
    progress = train.progress and is_main_process() and sys.stderr.isatty()
    train_ds = CacheDataset(train_items, Compose(train_transforms), cache_rate=cache_rate, progress=progress,
                            copy_cache=not sampling_copies)
    val_ds = CacheDataset(val_items, Compose(val_transforms), cache_rate=cache_rate, progress=progress)
    generator = torch.Generator()  # re-seeded every epoch by the Trainer (per rank under DDP)
    sampler: Sampler
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
