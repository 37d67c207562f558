"""The comparison's outputs: one table (metric by model) as CSV and Markdown, and a figure of example
predictions side by side, drawn with torchvision (no plotting library)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torchvision.ops import masks_to_boxes
from torchvision.transforms.functional import to_pil_image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from medseg.engine.pictures import class_colour, grey_uint8, overlay_uint8
from medseg.io import atomic_output
from medseg.models2d.base import Prediction2D

# Instances get colours of their own, so that two touching objects of one class stay apart.
INSTANCE_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                    "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3"]
INSTANCE_ZOOM = 3  # slices are small (96 pixels); enlarge them so that box captions can be read

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


def _zoomed(image: torch.Tensor) -> torch.Tensor:
    return image.repeat_interleave(INSTANCE_ZOOM, 0).repeat_interleave(INSTANCE_ZOOM, 1)


def _grey_tile(image: torch.Tensor) -> torch.Tensor:
    """The slice enlarged, in the radiological view, as uint8 RGB [3, H, W]."""
    grey = grey_uint8(_zoomed(_display(image)))
    return grey.expand(3, *grey.shape).contiguous()


def _instance_tile(image: torch.Tensor, prediction: Prediction2D, class_names: tuple[str, ...],
                   score_threshold: float = 0.0) -> torch.Tensor:
    """Each detected instance scoring at least ``score_threshold`` (those the label map keeps) in its own
    colour with its box, class and score; or, for a panoptic prediction, each segment of the panoptic
    map in its own colour (stuff in its class colour)."""
    rgb = _grey_tile(image)
    if prediction.panoptic is not None:
        ids = _zoomed(_display(prediction.panoptic.ids))
        pairs = [(s, ids == s.id) for s in prediction.panoptic.segments]
        pairs = [(s, mask) for s, mask in pairs if bool(mask.any())]
        if not pairs:
            return rgb
        segments = [s for s, _ in pairs]
        masks = torch.stack([mask for _, mask in pairs])
        colours = [INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)] if s.is_thing else class_colour(s.label)
                   for i, s in enumerate(segments)]
        captions = [f"{class_names[s.label]} {s.score:.2f}" if s.is_thing and s.score is not None
                    else class_names[s.label] for s in segments]
        rgb = draw_segmentation_masks(rgb, masks, alpha=0.55, colors=colours)
        things = [i for i, s in enumerate(segments) if s.is_thing]
    elif prediction.instances is not None and len(prediction.instances):
        instances = prediction.instances
        scores = instances.scores if instances.scores is not None else torch.ones(len(instances))
        masks = torch.stack([_zoomed(_display(m)) for m in instances.masks.bool()])
        keep = [i for i in range(len(masks)) if bool(masks[i].any()) and float(scores[i]) >= score_threshold]
        if not keep:
            return rgb
        masks = masks[keep]
        colours = [INSTANCE_COLOURS[i % len(INSTANCE_COLOURS)] for i in range(len(keep))]
        captions = [f"{class_names[int(instances.labels[i])]} {float(scores[i]):.2f}" for i in keep]
        rgb = draw_segmentation_masks(rgb, masks, alpha=0.55, colors=colours)
        things = list(range(len(keep)))
    else:
        return rgb
    if things:
        boxes = masks_to_boxes(masks[things])
        rgb = draw_bounding_boxes(rgb, boxes, labels=[captions[i] for i in things],
                                  colors=[colours[i] for i in things], width=1)
    return rgb


def write_instance_examples(path: Path, images: list[torch.Tensor], predictions: dict[str, list[Prediction2D]],
                            class_names: tuple[str, ...], score_threshold: float = 0.0) -> None:
    """A PNG grid, one row per example slice: image | each instance or panoptic model's objects, each in a
    colour of its own with box, class and score (instances from ``score_threshold`` up; panoptic: the
    segment map). Slices are [H, W] in array order."""
    tiles = []
    for i, image in enumerate(images):
        tiles.append(_grey_tile(image))
        tiles += [_instance_tile(image, per_model[i], class_names, score_threshold)
                  for per_model in predictions.values()]
    grid = make_grid(torch.stack(tiles), nrow=1 + len(predictions), padding=4, pad_value=255)
    with atomic_output(path) as tmp:
        to_pil_image(grid).save(tmp, format="PNG")


def legend(class_names: tuple[str, ...]) -> str:
    """Which colour marks which class in the figure."""
    return ", ".join(f"{name} {class_colour(k)}" for k, name in enumerate(class_names) if k > 0)
