"""Per-class segmentation metrics on integer label maps, computed with MONAI.

Conventions (the nnU-Net ones), for each foreground class ``c`` in ``1 .. num_classes - 1``:

* ``c`` absent from both prediction and ground truth: every metric is NaN. The class is *excluded* from
  means (use ``np.nanmean``), not counted as a perfect score.
* ``c`` present on one side only: Dice, IoU, precision and recall are 0 (a missed structure or a false
  alarm is a failure; where the ratio itself is 0/0 -- precision with an empty prediction, recall with an
  empty ground truth -- it is set to 0 as well), and HD95 is NaN (a distance to nothing is undefined).
* HD95 is NaN whenever either side is empty; otherwise it is MONAI's symmetric 95th-percentile Hausdorff
  distance between the boundary voxels (the larger of the two directed 95th percentiles), in mm when
  ``spacing`` is given, in voxels otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
    get_confusion_matrix,
)

from medseg.regions import bounding_box

METRIC_NAMES = ("dice", "iou", "precision", "recall", "hd95")

# Label values above this are checked class by class instead of with one bincount (memory).
_BINCOUNT_LIMIT = 1 << 20


def _as_label_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_floating_point() and not torch.equal(t, torch.round(t)):
        raise ValueError(f"{name}: label map holds non-integer values")
    return t.to(torch.int64)


def _present_classes(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Boolean [num_classes]: which label values 0..num_classes-1 occur in ``labels``."""
    flat = labels.reshape(-1)
    if flat.numel() and int(flat.min()) >= 0 and int(flat.max()) < max(num_classes, _BINCOUNT_LIMIT):
        return torch.bincount(flat, minlength=num_classes)[:num_classes] > 0
    return torch.tensor([bool((flat == c).any()) for c in range(num_classes)], dtype=torch.bool)


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Dice 2TP / (2TP + FP + FN) from voxel counts (any shape); 0 where all three are 0. The one Dice
    formula medseg uses outside MONAI's own (2D scoring, coarse-to-fine agreement)."""
    denominator = 2 * tp + fp + fn
    zero = torch.zeros_like(denominator, dtype=torch.float64)
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), zero)


def binary_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    """Dice of two boolean masks; 1 when both are empty (they agree)."""
    tp, in_a, in_b = (torch.as_tensor(int(x.sum()), dtype=torch.float64) for x in (a & b, a, b))
    return 1.0 if in_a + in_b == 0 else float(dice_from_counts(tp, in_a - tp, in_b - tp))


def segmentation_metrics(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    include_hd95: bool = True,
) -> dict[str, np.ndarray]:
    """Dice, IoU, precision, recall and HD95 for each foreground class of two label maps.

    Args:
        pred: predicted label map, 2D or 3D integer array (NumPy or torch, any device), no channel axis.
        target: ground-truth label map of the same shape.
        num_classes: number of classes *including* background (label 0). Label values outside
            ``0 .. num_classes - 1`` are not scored.
        spacing: voxel size per axis (mm), one value per array axis; HD95 is then in mm. ``None``: voxels.
        include_hd95: compute HD95 (the slow part); when False the ``"hd95"`` array is all NaN.

    Returns:
        ``{"dice", "iou", "precision", "recall", "hd95"}`` -> float64 arrays of shape ``[num_classes - 1]``,
        entry ``i`` for label ``i + 1``. See the module docstring for the conventions:
        absent from both -> NaN everywhere (excluded from means, not perfect); predicted but absent from the
        ground truth -> Dice 0; HD95 NaN when either side is empty.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1 (background), got {num_classes}")
    pred_t = _as_label_tensor(pred, "pred")
    target_t = _as_label_tensor(target, "target").to(pred_t.device)
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred shape {tuple(pred_t.shape)} differs from target shape {tuple(target_t.shape)}")
    if pred_t.ndim not in (2, 3):
        raise ValueError(f"expected 2D or 3D label maps without a channel axis, got shape {tuple(pred_t.shape)}")
    if spacing is not None:
        spacing = [float(s) for s in spacing]
        if len(spacing) != pred_t.ndim:
            raise ValueError(f"spacing {tuple(spacing)} needs one value per axis of shape {tuple(pred_t.shape)}")

    n_fg = num_classes - 1
    out = {name: np.full(n_fg, np.nan, dtype=np.float64) for name in METRIC_NAMES}
    if n_fg == 0:
        return out
    in_pred = _present_classes(pred_t, num_classes).tolist()
    in_target = _present_classes(target_t, num_classes).tolist()

    for c in range(1, num_classes):
        i = c - 1
        if not (in_pred[c] or in_target[c]):
            continue  # absent from both: NaN everywhere
        p_mask, t_mask = pred_t == c, target_t == c
        box = bounding_box(p_mask | t_mask, margin=1)  # metrics only depend on the union's neighbourhood
        # MONAI wants one-hot [batch, channel, *spatial]; one binary channel per call keeps memory bounded.
        p = p_mask[box].to(torch.float32)[None, None]
        t = t_mask[box].to(torch.float32)[None, None]
        del p_mask, t_mask

        # ignore_empty=False: empty ground truth + non-empty prediction -> 0 (both empty never gets here).
        out["dice"][i] = float(compute_dice(p, t, include_background=True, ignore_empty=False)[0, 0])
        out["iou"][i] = float(compute_iou(p, t, include_background=True, ignore_empty=False)[0, 0])
        confusion = get_confusion_matrix(p, t, include_background=True)
        for name in ("precision", "recall"):
            value = float(compute_confusion_matrix_metric(name, confusion)[0, 0])
            out[name][i] = 0.0 if np.isnan(value) else value  # 0/0 with the class on one side only

        if include_hd95 and in_pred[c] and in_target[c]:
            # CPU: MONAI's distance transform on CUDA needs cuCIM; the cropped masks are small anyway.
            with warnings.catch_warnings():  # MONAI warns about its own internal use of a deprecated argument
                warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
                hd = compute_hausdorff_distance(
                    p.cpu(), t.cpu(), include_background=True, percentile=95, spacing=spacing
                )
            out["hd95"][i] = float(hd[0, 0])
    return out
