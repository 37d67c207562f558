"""The report's pictures, drawn with matplotlib (off-screen) and saved as PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on a cluster node; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from medseg.io import read_volume  # noqa: E402
from medseg.report.runs import RunRecord  # noqa: E402

DPI = 90
PLANES = ("axial", "coronal", "sagittal")


def _save(figure: plt.Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _x_axis(log: list[dict]) -> tuple[str, list[float]]:
    """Optimiser steps where the log has them (older logs count epochs)."""
    key = "step" if all("step" in row for row in log) else "epoch"
    return key, [float(row.get(key, index)) for index, row in enumerate(log)]


def training_curves(run: RunRecord, path: Path) -> None:
    """Loss, learning rate and validation Dice per class against optimiser steps, one panel each."""
    figure, (loss_axes, lr_axes, dice_axes) = plt.subplots(1, 3, figsize=(13, 3.4))
    key, x = _x_axis(run.log)
    for name, axes in (("train_loss", loss_axes), ("lr", lr_axes)):
        points = [(xi, row[name]) for xi, row in zip(x, run.log) if isinstance(row.get(name), (int, float))]
        if points:
            axes.plot(*zip(*points), color="tab:blue")
        axes.set_title("training loss" if name == "train_loss" else "learning rate")
        axes.set_xlabel(key)
    for name in [*run.class_names, "mean"]:
        column = "val_mean_dice" if name == "mean" else f"val_dice_{name}"
        points = [(xi, row[column]) for xi, row in zip(x, run.log) if isinstance(row.get(column), (int, float))]
        if points:
            style = {"color": "black", "linewidth": 2} if name == "mean" else {"linewidth": 1}
            dice_axes.plot(*zip(*points), label=name, **style)
    dice_axes.set_title("validation Dice")
    dice_axes.set_xlabel(key)
    dice_axes.set_ylim(0, 1)
    if dice_axes.lines:
        dice_axes.legend(fontsize=7, loc="lower right")
    _save(figure, path)


def compared_curves(runs: list[RunRecord], path: Path) -> None:
    """Mean validation Dice of several runs against steps and against minutes, on shared axes."""
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 3.4))
    keys = set()
    for run in runs:
        key, x = _x_axis(run.log)
        keys.add(key)
        rows = [(xi, row) for xi, row in zip(x, run.log) if isinstance(row.get("val_mean_dice"), (int, float))]
        if not rows:
            continue
        by_step.plot([xi for xi, _ in rows], [r["val_mean_dice"] for _, r in rows], label=run.name)
        timed = [(r["elapsed_min"], r["val_mean_dice"]) for _, r in rows if "elapsed_min" in r]
        if timed:
            by_time.plot(*zip(*timed), label=run.name)
    steps = "optimiser steps" if keys == {"step"} else " or ".join(sorted(keys))  # older logs count epochs
    for axes, label in ((by_step, steps), (by_time, "minutes")):
        axes.set_xlabel(label)
        axes.set_ylabel("mean validation Dice")
        axes.set_ylim(0, 1)
        if axes.lines:
            axes.legend(fontsize=7)
    _save(figure, path)


def case_dice(run: RunRecord, path: Path) -> None:
    """Per-case Dice of the final validation: a box per class with every case as a point on it."""
    names = run.class_names or sorted({c for scores in run.case_dice.values() for c in scores})
    figure, axes = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    columns = [[s[name] for s in run.case_dice.values() if not math.isnan(s.get(name, math.nan))] for name in names]
    positions = [i for i, values in enumerate(columns, start=1) if values]
    axes.boxplot([columns[p - 1] for p in positions], positions=positions, widths=0.5, showfliers=False)
    jitter = np.random.default_rng(0)  # the same picture every time
    for position in positions:
        values = columns[position - 1]
        axes.scatter(position + jitter.uniform(-0.15, 0.15, len(values)), values, s=10, alpha=0.6, color="tab:blue")
    axes.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    axes.set_ylim(-0.02, 1.02)
    axes.set_ylabel("Dice per validation case")
    _save(figure, path)


def _canonical(path: Path) -> np.ndarray:
    """A volume's voxels turned to RAS+ axes order (x: left->right, y: back->front, z: feet->head), so
    every plane is shown the same way up whatever the file's orientation."""
    volume = read_volume(path)
    orientation = nib.orientations.io_orientation(volume.affine)
    return nib.orientations.apply_orientation(np.asarray(volume.array), orientation)


def _planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through ``centre``, rotated so that up is anterior (axial)
    or head (coronal, sagittal)."""
    x, y, z = centre
    return [np.rot90(volume[:, :, z]), np.rot90(volume[:, y, :]), np.rot90(volume[x, :, :])]


def overlay(image_path: Path, label_path: Path | None, prediction_path: Path, class_names: list[str], title: str,
            path: Path) -> None:
    """Three planes through the centre of the ground truth (else of the prediction): the image with
    the ground truth above and the prediction below, and which colour is which class."""
    classes = len(class_names) + 1
    image, prediction = _canonical(image_path), _canonical(prediction_path)
    truth = _canonical(label_path) if label_path is not None else None
    focus = truth if truth is not None and truth.any() else prediction
    centre = (tuple(int(round(c)) for c in np.argwhere(focus > 0).mean(0)) if focus.any()
              else tuple(s // 2 for s in image.shape))
    low, high = np.percentile(image, [0.5, 99.5])
    colours = ListedColormap(plt.get_cmap("tab10")(np.arange(max(classes, 2)) % 10))
    rows = [("ground truth", truth), ("prediction", prediction)] if truth is not None else [("prediction", prediction)]
    figure, grid = plt.subplots(len(rows), 3, figsize=(10, 3.3 * len(rows)), squeeze=False)
    for row, (name, labels) in enumerate(rows):
        for column, (plane, slice_image, slice_labels) in enumerate(
                zip(PLANES, _planes(image, centre), _planes(labels, centre))):  # type: ignore[arg-type]
            axes = grid[row][column]
            axes.imshow(slice_image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            shown = np.ma.masked_equal(slice_labels, 0)
            axes.imshow(shown, cmap=colours, vmin=0, vmax=max(classes - 1, 1), alpha=0.45, interpolation="nearest")
            axes.set_title(f"{name}, {plane}", fontsize=9)
            axes.axis("off")
    figure.suptitle(title, fontsize=10)
    handles = [Patch(color=colours(k), alpha=0.6, label=name) for k, name in enumerate(class_names, start=1)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
