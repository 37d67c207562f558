"""Fill the ``auto`` parts of a config from the training data (nnU-Net style "planning").

The resolved values (class names, modality, target spacing, CT intensity window) are written into the
run's config, so inference preprocesses new scans exactly as training did.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.config import Config
from medseg.data.datasets import Case, Dataset
from medseg.errors import MedsegError
from medseg.io import read_header, read_volume

_MODALITIES: dict[str, Literal["ct", "mri"]] = {"ct": "ct", "mri": "mri"}


def _modality(config: Config, declared: str | None) -> Literal["ct", "mri"]:
    """``data.modality``, or with ``auto`` the dataset's declared channel name (CT, else MRI)."""
    wanted = config.data.modality.lower()
    if wanted == "auto":
        return "ct" if (declared or "").strip().upper() == "CT" else "mri"
    if wanted not in _MODALITIES:
        raise MedsegError(f"config key 'data.modality': expected auto, ct or mri, got '{config.data.modality}'")
    return _MODALITIES[wanted]


def _label(case: Case) -> Path:
    """The label map of a training case; planning reads labels, so every case must have one."""
    if case.label is None:
        raise MedsegError(f"{case.image}: case '{case.case_id}' has no label map; planning needs labelled cases")
    return case.label


def _median_spacing(images: list[Path]) -> list[float]:
    spacings = [np.linalg.norm(read_header(image)[1][:3, :3], axis=0) for image in images]
    return [round(float(s), 4) for s in np.median(np.stack(spacings), axis=0)]


def _ct_window(cases: list[Case], max_cases: int = 16, seed: int = 0) -> list[float]:
    """0.5 / 99.5 percentiles of intensities inside labelled voxels, like nnU-Net's CT scheme."""
    rng = np.random.default_rng(seed)
    picked = [cases[i] for i in sorted(rng.choice(len(cases), size=min(max_cases, len(cases)), replace=False))]
    samples = []
    for case in picked:
        image, label = read_volume(case.image).array, read_volume(_label(case)).array
        values = image[label > 0]
        if values.size:
            samples.append(rng.choice(values, size=min(values.size, 20000), replace=False).astype(np.float32))
    if not samples:
        return [-1000.0, 1000.0]
    lo, hi = np.percentile(np.concatenate(samples), [0.5, 99.5])
    return [round(float(lo), 1), round(float(hi), 1)]


def plan(config: Config, dataset: Dataset, train_cases: list[Case]) -> Config:
    """Return a copy of ``config`` with every data-dependent value resolved."""
    data = config.data
    names = dataset.class_names
    if data.class_names is not None:
        if names is not None and len(names) != len(data.class_names):
            raise MedsegError(
                f"config key 'data.class_names': {len(data.class_names)} names, "
                f"but {dataset.root} declares {len(names)}"
            )
        names = data.class_names
    if names is None:
        values: set[int] = set()
        for case in train_cases:
            values.update(int(v) for v in np.unique(read_volume(_label(case)).array))
        names = ["background"] + [f"class_{k}" for k in range(1, max(values) + 1)]
    if len(names) < 2:
        raise MedsegError(f"{dataset.root}: need at least one foreground class, got {names}")
    unknown = [name for name in data.partial_classes if name not in names[1:]]
    if unknown:
        raise MedsegError(f"config key 'data.partial_classes': {', '.join(unknown)} not among the foreground classes "
                          f"of {dataset.root} ({', '.join(names[1:])})")
    modality = _modality(config, dataset.modality)
    spacing = data.spacing or _median_spacing([c.image for c in train_cases])
    window = data.intensity_window
    if modality == "ct" and window is None:
        window = _ct_window(train_cases, seed=data.split_seed)
    resolved = dataclasses.replace(
        data, class_names=list(names), modality=modality, spacing=spacing, intensity_window=window
    )
    return dataclasses.replace(config, data=resolved)


UNLABELLED_CT_WINDOW = [-1000.0, 1000.0]  # Tang et al.'s pretraining window; no labels to plan from


def plan_unlabelled(config: Config, images: list[Path], declared_modality: str | None) -> Config:
    """Planning for pretraining: modality, median spacing and (CT) intensity window without labels."""
    data = config.data
    modality = _modality(config, declared_modality)
    window = data.intensity_window or (UNLABELLED_CT_WINDOW if modality == "ct" else None)
    resolved = dataclasses.replace(
        data, modality=modality, spacing=data.spacing or _median_spacing(images), intensity_window=window
    )
    return dataclasses.replace(config, data=resolved)
