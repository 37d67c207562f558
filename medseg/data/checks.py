"""Dataset validation for ``medseg check`` and before training: one problem per line, file first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.datasets import Case, Dataset, discover_dataset
from medseg.errors import MedsegError
from medseg.io import read_header, read_volume


def _geometry_problems(case: Case, image_geom: tuple[tuple[int, int, int], np.ndarray],
                       label_geom: tuple[tuple[int, int, int], np.ndarray]) -> list[str]:
    (image_shape, image_affine), (label_shape, label_affine) = image_geom, label_geom
    if image_shape != label_shape:
        return [f"{case.label}: label shape {label_shape} differs from image shape {image_shape} ({case.image.name})"]
    if not np.allclose(image_affine, label_affine, rtol=1e-4, atol=1e-3):
        return [f"{case.label}: label affine differs from the image affine ({case.image.name})"]
    return []


def label_problems(path: Path, labels: np.ndarray, num_classes: int | None) -> list[str]:
    """Label values that are negative, fractional or beyond the declared classes."""
    values = np.unique(labels)
    bad = [v for v in values if v < 0 or v % 1 or (num_classes is not None and v >= num_classes)]
    if not bad:
        return []
    allowed = f"0..{num_classes - 1}" if num_classes else "non-negative integers"
    shown = ", ".join(f"{float(v):g}" for v in bad[:8])
    return [f"{path}: label values {shown} outside the declared classes ({allowed})"]


def check_case(case: Case, num_classes: int | None, read_voxels: bool = True) -> list[str]:
    """Problems of one case; ``read_voxels=False`` checks headers only (fast, used before training)."""
    problems: list[str] = []
    geometry = {}
    for key, path in (("image", case.image), ("label", case.label)):
        if path is None:
            continue
        try:
            if read_voxels:
                volume = read_volume(path)
                geometry[key] = (tuple(volume.array.shape), volume.affine)
                if key == "label":
                    problems += label_problems(path, volume.array, num_classes)
            else:
                geometry[key] = read_header(path)
        except MedsegError as exc:
            problems.append(str(exc))
    if len(geometry) == 2:
        problems += _geometry_problems(case, geometry["image"], geometry["label"])
    return problems


def check_dataset(root: str | Path, read_voxels: bool = True) -> tuple[Dataset | None, list[str]]:
    """Discover ``root`` and check every case; returns the dataset (None if undiscoverable) and problems."""
    try:
        dataset = discover_dataset(root)
    except MedsegError as exc:
        return None, [str(exc)]
    num_classes = len(dataset.class_names) if dataset.class_names else None
    problems = [p for case in dataset.cases for p in check_case(case, num_classes, read_voxels)]
    return dataset, problems


def check_headers(cases: list[Case], num_classes: int | None) -> None:
    """Header-only checks of every case before anything is written: the first problem, as one line."""
    problems = [p for case in cases for p in check_case(case, num_classes, read_voxels=False)]
    if problems:
        more = f" (and {len(problems) - 1} more problems; run 'medseg check')" if len(problems) > 1 else ""
        raise MedsegError(problems[0] + more)
