"""The comparison's outputs: one table (metric by model) as CSV and Markdown, and a figure of example
predictions side by side, drawn with torchvision (no plotting library)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import make_grid

from medseg.engine.pictures import class_colour, overlay_uint8
from medseg.io import atomic_output

RUN_FIGURES = ("steps", "samples_seen", "s_per_step", "train_seconds", "infer_ms_per_slice", "parameters")


def _rows(results: dict[str, dict[str, float]]) -> list[str]:
    """Metric names in first-seen order over the models (pixel metrics, AP, PQ), run figures last."""
    rows: list[str] = []
    for scores in results.values():
        rows += [k for k in scores if k not in rows and k not in RUN_FIGURES]
    return rows + [k for k in RUN_FIGURES if any(k in scores for scores in results.values())]


def write_csv(path: Path, results: dict[str, dict[str, float]]) -> None:
    """One row per metric, one column per model; empty where a metric does not apply to a model."""
    models = list(results)
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", *models])
        for row in _rows(results):
            writer.writerow([row, *(results[m].get(row, "") for m in models)])


def _cell(row: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if row == "parameters":
        return f"{value / 1e6:.1f} M"
    if row in ("steps", "samples_seen"):
        return str(int(value))
    if row in ("train_seconds", "infer_ms_per_slice"):
        return f"{value:.1f}"
    if row == "s_per_step":
        return f"{value:.3f}"
    return f"{value:.3f}"


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    """The metric-by-model table in Markdown ("–": not applicable, or no case to score)."""
    models = list(results)
    lines = ["| metric | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for row in _rows(results):
        lines.append(f"| {row} | " + " | ".join(_cell(row, results[m].get(row)) for m in models) + " |")
    return "\n".join(lines)


def _display(slice_: torch.Tensor) -> torch.Tensor:
    """An axial slice in RAS array order [x, y] -> radiological view: anterior up, patient's right on
    the left of the picture."""
    return slice_.flip(0, 1).T


def _tile(image: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    return overlay_uint8(_display(image), None if labels is None else _display(labels), num_classes, alpha=0.5)


def write_examples(path: Path, images: list[torch.Tensor], truths: list[torch.Tensor],
                   predictions: dict[str, list[torch.Tensor]], num_classes: int) -> None:
    """A PNG grid, one row per example slice: image | ground truth | each model's semantic prediction.
    ``images`` and label maps are [H, W] in array order; label maps hold class indices."""
    tiles = []
    for i, (image, truth) in enumerate(zip(images, truths)):
        tiles += [_tile(image, None, num_classes), _tile(image, truth, num_classes)]
        tiles += [_tile(image, labels[i], num_classes) for labels in predictions.values()]
    grid = make_grid(torch.stack(tiles), nrow=2 + len(predictions), padding=2, pad_value=255)
    with atomic_output(path) as tmp:
        to_pil_image(grid).save(tmp, format="PNG")


def legend(class_names: tuple[str, ...]) -> str:
    """Which colour marks which class in the figure."""
    return ", ".join(f"{name} {class_colour(k)}" for k, name in enumerate(class_names) if k > 0)
