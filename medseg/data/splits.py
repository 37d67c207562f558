"""Seeded train/validation splits: a hold-out fraction or one fold of k-fold cross-validation."""

from __future__ import annotations

import numpy as np

from medseg.errors import MedsegError


def make_split(
    case_ids: list[str], val_fraction: float = 0.2, num_folds: int = 0, fold: int = 0, seed: int = 0,
    train_fraction: float = 1.0,
) -> dict[str, list[str]]:
    """Shuffle ids with ``seed``; with ``num_folds`` >= 2 fold ``fold`` is validation, else the last
    ``val_fraction`` of the shuffled ids. The same arguments always give the same split.

    ``train_fraction`` < 1 keeps that share of the training cases (at least one) for label-efficiency
    experiments; the validation cases do not change, and smaller fractions are subsets of larger ones.
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise MedsegError(f"need at least 2 cases to split into training and validation, got {len(ids)}")
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    if num_folds >= 2:
        if num_folds > len(ids):
            raise MedsegError(f"config key 'data.num_folds': {num_folds} folds for {len(ids)} cases")
        validation = order[fold::num_folds]
    else:
        n_val = max(1, round(len(ids) * val_fraction))
        validation = order[len(ids) - n_val :]
    held = set(validation)
    train = [i for i in order if i not in held]
    train = train[: max(1, round(len(train) * train_fraction))]
    return {"train": sorted(train), "validation": sorted(validation)}
