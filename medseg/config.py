"""Typed configuration: dataclass defaults, YAML files and dotted ``KEY=VALUE`` overrides.

One config system for everything. Unknown keys are rejected with the list of valid ones, values are
checked against the field types, and the resolved config is written into every run folder so that a
run can be reproduced and ``medseg infer`` needs nothing but that folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import MedsegError


@dataclass
class AugmentConfig:
    """Random augmentation applied to training samples (MONAI dictionary transforms)."""

    affine_prob: float = 0.2
    rotate_degrees: float = 15.0
    scale_range: float = 0.15
    flip_axes: list[int] = field(default_factory=list)
    intensity_prob: float = 0.15
    noise_prob: float = 0.1
    noise_std: float = 0.1


@dataclass
class DataConfig:
    """Where the data is and how volumes become network inputs (shared by every strategy).

    ``train_fraction`` < 1 trains on a seeded subset of the training split (label-efficiency studies).
    """

    root: str | None = None
    modality: str = "auto"
    class_names: list[str] | None = None
    spacing: list[float] | None = None
    orientation: str = "RAS"
    intensity_window: list[float] | None = None
    crop_foreground: bool = True
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])
    samples_per_volume: int = 2
    pos_fraction: float = 0.67
    val_fraction: float = 0.2
    train_fraction: float = 1.0
    num_folds: int = 0
    fold: int = 0
    split_seed: int = 0
    max_cases: int | None = None
    cache: bool = True
    num_workers: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """Which strategy and network; network fields are read by the builders in ``medseg.networks``.

    ``channels``/``strides``/``num_res_units`` shape the U-Nets; ``size`` (tiny, small, base) picks the
    transformer presets of ``unetr`` and ``swin_unetr``; ``use_v2`` selects Swin UNETR v2 and
    ``gradient_checkpointing`` trades compute for memory in Swin UNETR. ``pretrained`` names a
    ``medseg pretrain`` run folder or checkpoint, or the research code's ``model_swinvit.pt``, whose
    encoder initialises Swin UNETR at the start of training.
    """

    strategy: str = "patch"
    network: str = "unet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0
    size: str = "small"
    use_v2: bool = False
    gradient_checkpointing: bool = False
    pretrained: str | None = None


@dataclass
class Slice2DConfig:
    """The ``slice2d`` strategy: 2D networks on slices along each axis, fused into one volume.

    ``axes`` are array axes after reorientation to RAS: 0 sagittal, 1 coronal, 2 axial slices.
    ``context_slices`` k gives 2.5D input (the slice and k neighbours on each side as channels).
    ``fusion`` is ``mean`` (of probabilities), ``majority`` (vote of the axes) or ``single``
    (``fusion_axis`` alone). ``refine_rounds`` > 0 turns on coarse-to-fine: predict again inside the
    bounding box of the last prediction plus ``refine_margin`` voxels until two rounds agree with
    Dice >= ``refine_stop_dice``.
    """

    axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    shared_model: bool = False
    context_slices: int = 0
    patch_size: list[int] = field(default_factory=lambda: [128, 128])
    fusion: str = "mean"
    fusion_axis: int = 2
    refine_rounds: int = 0
    refine_margin: int = 8
    refine_stop_dice: float = 0.95


@dataclass
class LowresConfig:
    """The ``lowres`` strategy: the whole volume resized to ``grid_size`` and segmented at once.

    ``refine_run`` names a ``patch`` run folder for an optional cascade: it predicts again at full
    resolution inside the bounding box of the low-resolution result plus ``refine_margin_mm``.
    """

    grid_size: list[int] = field(default_factory=lambda: [128, 128, 64])
    refine_run: str | None = None
    refine_margin_mm: float = 10.0


@dataclass
class TrainConfig:
    """Optimisation and the training loop. ``freeze_encoder_epochs`` and ``encoder_lr_scale`` apply to a
    pretrained Swin UNETR encoder: frozen for the first epochs, then at a fraction of the learning rate."""

    max_epochs: int = 100
    max_minutes: float | None = None
    iterations_per_epoch: int | None = None
    batch_size: int = 2
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    scheduler: str = "poly"
    warmup_epochs: int = 0
    loss: str = "dice_ce"
    grad_accumulation: int = 1
    grad_clip: float | None = 12.0
    amp: bool = True
    val_every: int = 1
    freeze_encoder_epochs: int = 0
    encoder_lr_scale: float = 1.0
    seed: int = 0
    progress: bool = True
    final_validation: bool = True


@dataclass
class InferConfig:
    """Sliding-window prediction settings, used by validation and ``medseg infer`` alike."""

    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: str = "gaussian"
    stitch_device: str = "auto"
    mirror_axes: list[int] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """Self-supervised pretraining of the Swin UNETR encoder (``medseg pretrain``; Tang et al. 2022).

    Three proxy tasks on random sub-volumes of ``data.patch_size``: rotation prediction (0/90/180/270
    degrees in the axial plane, cross-entropy), contrastive coding of two augmented views (NT-Xent at
    ``temperature``) and masked-volume inpainting (L1 on the dropped cubes: ``mask_fraction`` of the
    cubes of side ``mask_block`` voxels are replaced by noise). The total loss weighs them.
    """

    rotation_weight: float = 1.0
    contrastive_weight: float = 1.0
    inpainting_weight: float = 1.0
    temperature: float = 0.5
    embedding_dim: int = 512
    mask_fraction: float = 0.3
    mask_block: int = 16


@dataclass
class Compare2DConfig:
    """``medseg compare``: 2D models trained on the same axial slices with the same budget, then scored
    on the same validation slices.

    ``groups`` merges dataset classes: each entry is the new class name, then the classes it merges
    (``[Parotid, RightParotid, LeftParotid]``); each source class keeps its own instances.
    ``stuff_classes`` (names after grouping) are regions that semantic heads segment; every other
    foreground class is a "thing" whose instances (connected components) Mask R-CNN detects.
    The panoptic merge (Panoptic FPN) pastes instances with score >= ``score_threshold`` by score,
    drops one when more than ``overlap_threshold`` of its mask is already taken, and drops stuff
    regions under ``stuff_area_limit`` pixels; instance masks are binarised at ``mask_threshold``.
    ``anchor_sizes`` (pixels, one per FPN level) suit objects at the slice's own resolution;
    ``detections_per_image`` caps Mask R-CNN's output (and so the detections mask AP sees).
    Each model trains for ``max_minutes`` and/or ``max_steps``, whichever ends first;
    ``val_slices_per_case`` evenly spaced axial slices of each validation case are scored.
    """

    models: list[str] = field(default_factory=lambda: ["fcn", "unet2d", "maskrcnn", "panoptic"])
    groups: list[list[str]] = field(default_factory=list)
    stuff_classes: list[str] = field(default_factory=list)
    slice_size: list[int] = field(default_factory=lambda: [128, 128])
    batch_size: int = 8
    max_minutes: float | None = 5.0
    max_steps: int | None = None
    val_slices_per_case: int = 10
    examples: int = 4
    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_area_limit: int = 8
    mask_threshold: float = 0.5
    anchor_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    detections_per_image: int = 20
    maskrcnn_v2: bool = False


@dataclass
class Config:
    """The whole run: ``name`` labels the run folder; the sections hold everything else."""

    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    slice2d: Slice2DConfig = field(default_factory=Slice2DConfig)
    lowres: LowresConfig = field(default_factory=LowresConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    compare: Compare2DConfig = field(default_factory=Compare2DConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except MedsegError:
                continue
        raise MedsegError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise MedsegError(f"config key '{key}': expected a list, got {value!r}")
        (item_type,) = typing.get_args(tp)
        return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise MedsegError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            where = f"in '{prefix[:-1]}'" if prefix else "at the top level"
            raise MedsegError(f"unknown config key '{full}'; valid keys {where}: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MedsegError(f"config key '{full}': expected a section (mapping), got {value!r}")
            _apply(current, value, f"{full}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], full))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=0.01", "data.spacing=[1,1,2]"]`` -> nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise MedsegError(f"override '{item}': expected KEY=VALUE, e.g. train.max_epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MedsegError(f"override '{item}': '{part}' is set twice")
        node[parts[-1]] = value
    return nested


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file, then the dotted overrides; every value is type-checked."""
    config = Config()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise MedsegError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise MedsegError(f"{path}: invalid YAML{where}") from None
        if not isinstance(values, dict):
            raise MedsegError(f"{path}: expected a mapping of config sections at the top level")
        try:
            _apply(config, values)
        except MedsegError as exc:
            raise MedsegError(f"{path}: {exc}") from None
    _apply(config, parse_overrides(overrides or []))
    return config


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Rebuild a config saved in a run folder or checkpoint, then apply dotted overrides."""
    config = Config()
    _apply(config, values)
    _apply(config, parse_overrides(overrides or []))
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    from medseg.io import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
