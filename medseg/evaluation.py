"""Evaluate a folder of predicted label maps against a folder of ground-truth label maps.

Cases are matched by file name without the image suffix (``case_001.nii.gz`` <-> ``case_001.nrrd``). Label
files carry no nnU-Net channel suffix, so names such as ``amos_0001`` are kept whole (stripping ``_0001``
would merge every case into one); a prediction named with a channel suffix (``case_001_0000.nii.gz``, as
:func:`medseg.io.case_id` understands it) still matches ``case_001`` when nothing matches exactly.

Metrics and their conventions are those of :func:`medseg.metrics.segmentation_metrics`: a class absent from
both prediction and ground truth is NaN (excluded from means), predicted-but-absent gives Dice 0, HD95 is in
mm (spacing from the ground truth's affine) and NaN when either side is empty. A *partial* class (one that
not every ground truth annotates) is not scored on a case whose ground truth lacks it.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.io import IMAGE_SUFFIXES, atomic_output, case_id, image_stem, is_image_path, read_volume
from medseg.metrics import segmentation_metrics

# Order of the per-case columns (hd95 left out when not computed).
_ROW_METRICS = ("dice", "hd95", "iou", "precision", "recall")
_DECIMALS = 6
_MAX_LISTED = 10


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate_folders`. Floats that are undefined are NaN here and null in the JSON."""

    class_names: dict[int, str]  # foreground classes only: label value -> name
    per_case: list[dict] = field(default_factory=list)  # {"case": id, "dice_<name>": .., "hd95_<name>": .., ...}
    summary: dict = field(default_factory=dict)


def _list_cases(folder: Path, role: str) -> dict[str, Path]:
    """Image files (or DICOM series folders) of ``folder`` by name without the image suffix."""
    if not folder.exists():
        raise MedsegError(f"{folder}: {role} folder does not exist")
    if not folder.is_dir():
        raise MedsegError(f"{folder}: {role} folder is not a folder")
    cases: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not is_image_path(path):  # hidden: temporaries of atomic writes
            continue
        key = image_stem(path)
        if key in cases:
            raise MedsegError(f"{folder}: case {key!r} has more than one file ({cases[key].name}, {path.name})")
        cases[key] = path
    if not cases:
        raise MedsegError(f"{folder}: {role} folder holds no images (expected {', '.join(IMAGE_SUFFIXES)})")
    return cases


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown if len(names) <= _MAX_LISTED else f"{shown} and {len(names) - _MAX_LISTED} more"


def _match_cases(
    pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path
) -> tuple[list[tuple[str, Path, Path]], int]:
    """(case, prediction, ground truth) for every ground-truth case, and the number of unused predictions."""
    leftover = {key: path for key, path in pred.items() if key not in gt}
    by_case_id: dict[str, list[str]] = {}
    for key, path in leftover.items():
        by_case_id.setdefault(case_id(path), []).append(key)
    matched, missing, used = [], [], set()
    for key in sorted(gt):
        if key in pred:
            matched.append((key, pred[key], gt[key]))
            continue
        candidates = by_case_id.get(key, [])
        if len(candidates) > 1:
            raise MedsegError(
                f"{pred_dir}: case {key!r} has more than one prediction ({', '.join(pred[c].name for c in candidates)})"
            )
        if candidates:
            matched.append((key, pred[candidates[0]], gt[key]))
            used.add(candidates[0])
        else:
            missing.append(key)
    if missing:
        raise MedsegError(f"{pred_dir}: no prediction for {len(missing)} ground-truth case(s): {_listing(missing)}")
    return matched, len(leftover) - len(used)


def _read_labels(path: Path) -> tuple[np.ndarray, tuple[float, ...], np.ndarray]:
    """Label map as int64, voxel spacing, and which label values occur (sorted, non-negative)."""
    volume = read_volume(path)
    array, spacing = volume.array, volume.spacing
    del volume
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise MedsegError(f"{path}: label map holds non-integer values (dtype {array.dtype})")
    elif array.dtype.kind not in "iub":
        raise MedsegError(f"{path}: label map has unsupported data type {array.dtype}")
    labels = array.astype(np.int64, copy=False)
    del array
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise MedsegError(f"{path}: label map holds negative values (minimum {low})")
    flat = labels.reshape(-1)
    present = np.flatnonzero(np.bincount(flat)) if high < (1 << 24) else np.unique(flat)
    return labels, spacing, present


def _normalise_class_names(class_names: dict) -> dict[int, str]:
    names: dict[int, str] = {}
    for key, name in class_names.items():
        try:
            label = int(key)
        except (TypeError, ValueError):
            raise MedsegError(f"class_names: label value {key!r} is not an integer") from None
        if label < 0:
            raise MedsegError(f"class_names: label value {label} is negative")
        if label == 0:
            continue  # background is never scored
        names[label] = str(name)
    duplicates = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if duplicates:
        raise MedsegError(f"class_names: names used for more than one label: {', '.join(duplicates)}")
    return dict(sorted(names.items()))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _round(value: float) -> float:
    return value if math.isnan(value) else round(float(value), _DECIMALS)


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    class_names: dict[int, str] | None = None,
    output_json: str | Path | None = None,
    include_hd95: bool = True,
    partial_classes: Collection[str] = (),
) -> EvaluationResult:
    """Score every ground-truth case against its prediction, one case at a time.

    Args:
        pred_dir: folder of predicted label maps. Predictions without a ground truth are ignored (counted as
            ``"unmatched_predictions"``); a ground-truth case without a prediction is an error.
        gt_dir: folder of ground-truth label maps (e.g. nnU-Net's ``labelsTr``, files ``<case>.nii.gz``).
        class_names: label value -> name of the foreground classes (e.g. from dataset.json; label 0 is
            dropped). A label value outside it in a prediction or ground truth is an error. ``None``: the
            union of the label values seen in both folders, named ``class_<k>``.
        output_json: write the summary here (atomically, parent folders created) and the per-case rows as CSV
            beside it with the same stem (``metrics.json`` -> ``metrics.csv``).
        include_hd95: compute HD95 (the slowest metric); when False the rows have no ``hd95_*`` columns and
            the summary's HD95 values are NaN (null in the JSON).
        partial_classes: names of classes that not every ground truth annotates (``data.partial_classes``):
            a case whose ground truth lacks one is not scored for it, since its absence there means "not
            contoured", not "not there".

    Returns:
        An :class:`EvaluationResult`. ``summary`` holds ``"mean_dice"``, ``"mean_hd95"``, ``"num_cases"``,
        ``"unmatched_predictions"``, ``"per_class"`` (name -> ``dice``, ``hd95``, ``iou``, ``precision``,
        ``recall`` means over cases and ``num_present``, the number of cases whose ground truth holds the
        class) and ``"cases"`` (the per-case rows). Per-class means skip NaN (cases where the class is in
        neither prediction nor ground truth). ``mean_dice`` is the mean over foreground classes of those
        per-class means -- each class weighs the same whatever the number of cases it occurs in, which is the
        foreground mean Dice nnU-Net reports. ``mean_hd95`` is built the same way.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if output_json is not None:
        output_json = Path(output_json)
        if output_json.suffix.lower() == ".csv":
            raise MedsegError(f"{output_json}: the summary is JSON; its CSV is written beside it, give a .json name")
    gt_cases = _list_cases(gt_dir, "ground-truth")
    pred_cases = _list_cases(pred_dir, "prediction")
    matched, unmatched = _match_cases(pred_cases, gt_cases, pred_dir)
    return evaluate_cases(matched, class_names, output_json, include_hd95, unmatched, partial_classes)


def evaluate_cases(
    matched: list[tuple[str, Path, Path]],
    class_names: dict[int, str] | None = None,
    output_json: str | Path | None = None,
    include_hd95: bool = True,
    unmatched: int = 0,
    partial_classes: Collection[str] = (),
) -> EvaluationResult:
    """Score explicit (case, prediction file, ground-truth file) triples; see :func:`evaluate_folders`."""
    output_json = Path(output_json) if output_json is not None else None
    names = _normalise_class_names(class_names) if class_names is not None else None
    partial = _partial_labels(partial_classes, names)
    scores = [_score_case(case, pred_path, gt_path, names, include_hd95, partial)
              for case, pred_path, gt_path in matched]
    if names is None:
        names = {label: f"class_{label}" for label in sorted({label for s in scores for label in s.values})}
    result = _aggregate(scores, names, include_hd95, unmatched)
    result.summary["partial_classes"] = [names[label] for label in sorted(partial)]
    if output_json is not None:
        _write_outputs(result, output_json)
    return result


@dataclass
class _CaseScores:
    """What one case contributes to the aggregate: numbers only, so its label maps can be freed at once."""

    case: str
    values: dict[int, dict[str, float]]  # label -> metric -> value, for the labels on either side only
    gt_labels: set[int]  # foreground labels of the ground truth, for each class's ``num_present``


def _read_pair(
    pred_path: Path, gt_path: Path, names: dict[int, str] | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], np.ndarray, np.ndarray]:
    """Prediction, ground truth, spacing, and the labels of each, after checking the two can be compared.

    A shape mismatch or a label value outside ``names`` would give meaningless scores, so it is an error
    naming the offending file.
    """
    target, spacing, gt_labels = _read_labels(gt_path)
    pred, _, pred_labels = _read_labels(pred_path)
    if pred.shape != target.shape:
        raise MedsegError(
            f"{pred_path}: shape {tuple(pred.shape)} differs from ground truth {gt_path} shape {tuple(target.shape)}"
        )
    if names is not None:
        for path, labels in ((pred_path, pred_labels), (gt_path, gt_labels)):
            unknown = [int(v) for v in labels if v != 0 and int(v) not in names]
            if unknown:
                raise MedsegError(
                    f"{path}: label value(s) {', '.join(map(str, unknown))} not among the classes "
                    f"({', '.join(f'{k}={v}' for k, v in names.items())})"
                )
    return pred, target, spacing, pred_labels, gt_labels


def _partial_labels(partial_classes: Collection[str], names: dict[int, str] | None) -> set[int]:
    """The label values of ``partial_classes``, which must be among the class names."""
    if not partial_classes:
        return set()
    by_name = {name: label for label, name in (names or {}).items()}
    unknown = [name for name in partial_classes if name not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none are named; give the dataset that names them"
        raise MedsegError(f"partial classes: {', '.join(unknown)} not among the classes ({known})")
    return {by_name[name] for name in partial_classes}


def _score_case(
    case: str, pred_path: Path, gt_path: Path, names: dict[int, str] | None, include_hd95: bool,
    partial: Collection[int] = (),
) -> _CaseScores:
    """Metrics of every foreground label present in the prediction or the ground truth of one case, less
    the ``partial`` labels this ground truth does not annotate.

    The label maps live only inside this call, so however many cases there are, one case's arrays are
    in memory at a time. Labels absent from both sides are left out here and become NaN in the aggregate.
    """
    pred, target, spacing, pred_labels, gt_labels = _read_pair(pred_path, gt_path, names)
    unannotated = set(partial) - {int(v) for v in gt_labels}
    labels = sorted(({int(v) for v in pred_labels} | {int(v) for v in gt_labels}) - {0} - unannotated)
    values: dict[int, dict[str, float]] = {}
    if labels:
        metrics = segmentation_metrics(pred, target, max(labels) + 1, spacing=spacing, include_hd95=include_hd95)
        values = {v: {m: float(metrics[m][v - 1]) for m in metrics} for v in labels}
    return _CaseScores(case, values, {int(v) for v in gt_labels if v != 0})


def _aggregate(
    scores: list[_CaseScores], names: dict[int, str], include_hd95: bool, unmatched: int
) -> EvaluationResult:
    """Per-case rows, per-class means and the summary, with every class of ``names`` in each.

    Classes a case lacks on both sides are NaN in its row and skipped by the means, so a class is averaged
    only over the cases where it could be scored.
    """
    row_metrics = [m for m in _ROW_METRICS if include_hd95 or m != "hd95"]
    rows = []
    for s in scores:
        row: dict = {"case": s.case}
        for metric in row_metrics:
            for label, name in names.items():
                row[f"{metric}_{name}"] = _round(s.values.get(label, {}).get(metric, math.nan))
        rows.append(row)
    per_class = {name: _class_means(scores, label, include_hd95) for label, name in names.items()}
    summary = {
        "mean_dice": _round(_mean([e["dice"] for e in per_class.values()])),
        "mean_hd95": _round(_mean([e["hd95"] for e in per_class.values()])),
        "num_cases": len(rows),
        "unmatched_predictions": unmatched,
        "per_class": per_class,
        "cases": rows,
    }
    return EvaluationResult(class_names=dict(names), per_case=rows, summary=summary)


def _class_means(scores: list[_CaseScores], label: int, include_hd95: bool) -> dict:
    """Mean of each metric over the cases that score ``label``, and how many ground truths hold it.

    HD95 is NaN when not computed rather than missing, so the summary has the same keys either way.
    """
    entry = {}
    for metric in _ROW_METRICS:
        column = [s.values.get(label, {}).get(metric, math.nan) for s in scores]
        entry[metric] = _round(_mean(column)) if include_hd95 or metric != "hd95" else math.nan
    entry["num_present"] = sum(label in s.gt_labels for s in scores)
    return entry


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def _write_outputs(result: EvaluationResult, output_json: Path) -> None:
    """Summary as JSON and per-case rows as CSV beside it, each atomic so a reader never sees half a file."""
    text = json.dumps(_json_safe(result.summary), indent=2, allow_nan=False)
    with atomic_output(output_json) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    columns = list(result.per_case[0]) if result.per_case else ["case"]
    with atomic_output(output_json.with_suffix(".csv")) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in result.per_case:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def _fmt(value: float, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def format_table(result: EvaluationResult) -> str:
    """Plain-text table: one row per class (mean Dice, HD95 in mm, IoU, precision, recall over cases, and
    the number of cases whose ground truth holds the class), then a ``mean`` row over classes. ``-`` = no
    value (class never present, or HD95 not computed)."""
    header = ["class", "Dice", "HD95 (mm)", "IoU", "Precision", "Recall", "present"]
    body = []
    per_class = result.summary.get("per_class", {})
    for name, entry in per_class.items():
        body.append([
            name,
            _fmt(entry["dice"], 4),
            _fmt(entry["hd95"], 2),
            _fmt(entry["iou"], 4),
            _fmt(entry["precision"], 4),
            _fmt(entry["recall"], 4),
            str(entry["num_present"]),
        ])
    means = {m: _mean([e[m] for e in per_class.values()]) for m in ("iou", "precision", "recall")}
    body.append([
        "mean",
        _fmt(result.summary.get("mean_dice", math.nan), 4),
        _fmt(result.summary.get("mean_hd95", math.nan), 2),
        _fmt(means["iou"], 4),
        _fmt(means["precision"], 4),
        _fmt(means["recall"], 4),
        f"{result.summary.get('num_cases', len(result.per_case))} cases",
    ])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "-" * len(line(header))
    lines = [line(header), rule, *(line(r) for r in body[:-1]), rule, line(body[-1])]
    if partial := result.summary.get("partial_classes"):
        lines.append(f"{', '.join(partial)}: scored only on the cases whose ground truth holds them")
    return "\n".join(lines)
