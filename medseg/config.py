"""Typed configuration: dataclass defaults, YAML files and dotted ``KEY=VALUE`` overrides.

One config system for every command. Unknown keys are rejected with the list of valid ones, values are
checked against the field types (choices included) and then against their allowed ranges, all here and
all before a command creates anything. Each command reads and saves only its own sections
(``COMMAND_SECTIONS``), so a run folder's ``config.yaml`` holds exactly what that run used and
``medseg infer`` needs nothing but that folder.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from medseg.errors import MedsegError

# The train.loss values that have a partial-label (marginal) form.
MARGINAL_LOSSES = ("dice_ce", "dice_topk10", "dice", "ce")


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
    """Where the data is, how volumes become network inputs, and how training samples are drawn
    (shared by every command). Each strategy's input size lives in its own section.

    ``normalization``: ``window`` clips CT to ``intensity_window`` and scales it to [0, 1];
    ``ct_zscore`` clips to ``intensity_window`` then z-scores with ``intensity_mean``/``intensity_std``
    (nnU-Net's CT scheme, from foreground statistics); ``zscore`` standardises each image on its own;
    ``auto`` is ``window`` for CT and ``zscore`` otherwise. ``sampling``: ``pos_neg`` centres
    ``pos_fraction`` of the crops on foreground; ``classes`` centres them on each class in proportion
    to ``class_ratios`` (background first), which reaches rare classes.

    ``train_fraction`` < 1 trains on a seeded subset of the training split (label-efficiency studies).

    ``partial_classes`` names the classes that not every case annotates (clinical contours often leave
    organs out). A case whose label map lacks one of them says nothing about it: training uses the
    marginal form of ``train.loss`` for that case, and evaluation scores the class only on cases that
    annotate it. Presence counts alone cannot tell this from a class that is truly absent (a tumour), so
    it is declared, never guessed; the plan lists the classes missing from many cases as candidates.
    """

    root: str | None = None
    modality: Literal["auto", "ct", "mri"] = "auto"
    class_names: list[str] | None = None
    spacing: list[float] | None = None
    orientation: str = "RAS"
    normalization: Literal["auto", "window", "ct_zscore", "zscore"] = "auto"
    intensity_window: list[float] | None = None
    intensity_mean: float | None = None
    intensity_std: float | None = None
    crop_foreground: bool = True
    sampling: Literal["pos_neg", "classes"] = "pos_neg"
    class_ratios: list[float] | None = None
    partial_classes: list[str] = field(default_factory=list)
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

    ``channels``/``strides``/``num_res_units`` shape the U-Nets; ``dynunet`` also takes a stride and a
    ``kernel_sizes`` entry per axis (``[1, 2, 2]``: no pooling across thick slices); ``size`` (tiny, small,
    base) picks the transformer presets of ``unetr`` and ``swin_unetr``; ``use_v2`` selects Swin UNETR v2 and
    ``gradient_checkpointing`` trades compute for memory in Swin UNETR. ``window_size`` is Swin UNETR's
    attention window in tokens; unset, it is the pretrained encoder's (7 in the released weights) or else
    the largest window up to 7 that tiles the first stage's token grid, so that no attention is spent on
    padding (4 for a 64^3 patch, whose 32^3 tokens a window of 7 pads to 35^3). ``pretrained`` names a
    ``medseg pretrain`` run folder or checkpoint, or the research code's ``model_swinvit.pt``, whose
    encoder initialises Swin UNETR at the start of training. ``deep_supervision`` (``dynunet``) also
    scores the decoder's lower-resolution outputs in the training loss, as nnU-Net does, so that the
    gradient reaches the deep layers directly; prediction uses the full-resolution output alone.
    """

    strategy: Literal["patch", "slice2d", "lowres"] = "patch"
    network: str = "unet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int | list[int]] = field(default_factory=lambda: [2, 2, 2, 2])
    kernel_sizes: list[int | list[int]] | None = None
    num_res_units: int = 2
    norm: str = "instance"
    dropout: float = 0.0
    size: Literal["tiny", "small", "base"] = "small"
    use_v2: bool = False
    gradient_checkpointing: bool = False
    window_size: int | None = None
    pretrained: str | None = None
    deep_supervision: bool = False


@dataclass
class PatchConfig:
    """The ``patch`` strategy: sub-volumes of ``patch_size`` voxels at native resolution for training
    (foreground-biased by ``data.pos_fraction``), gaussian-blended sliding windows to predict."""

    patch_size: list[int] = field(default_factory=lambda: [96, 96, 96])


@dataclass
class Slice2DConfig:
    """The ``slice2d`` strategy: 2D networks on slices along each axis, fused into one volume.

    ``axes`` are array axes after reorientation to RAS: 0 sagittal, 1 coronal, 2 axial slices.
    ``context_slices`` k gives 2.5D input (the slice and k neighbours on each side as channels).
    ``patch_size`` is the in-plane size of the training crops and inference windows.
    ``fusion`` is ``mean`` (of probabilities), ``majority`` (vote of the axes) or ``single``
    (``fusion_axis`` alone). ``refine_rounds`` > 0 turns on coarse-to-fine: predict again inside the
    bounding box of the last prediction plus ``refine_margin`` voxels until two rounds agree with
    Dice >= ``refine_stop_dice``.
    """

    axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    shared_model: bool = False
    context_slices: int = 0
    patch_size: list[int] = field(default_factory=lambda: [128, 128])
    fusion: Literal["mean", "majority", "single"] = "mean"
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
    """Optimisation and the training loop, for every command that trains.

    A run ends after ``max_epochs`` epochs of ``iterations_per_epoch`` batches (one pass over the
    training set when unset), or at the end of the epoch that crosses ``max_minutes``.
    ``freeze_encoder_epochs`` and ``encoder_lr_scale`` apply to a network's pretrainable encoder:
    frozen for the first epochs, then at a fraction of the learning rate.

    Speed (``engine/speed.py`` has the measurements): ``channels_last`` stores convolution weights and
    batches channels-last; ``amp`` is fp16 autocast on CUDA; ``cpu_bf16`` is bf16 autocast on a CPU with
    native bf16 (AMX, AVX512-BF16); ``compile`` compiles the network's forward with ``torch.compile``.

    ``val_every``: validate every N epochs; 0 validates whenever the training since the last validation
    took at least ``VALIDATION_TIME_RATIO`` (engine/trainer.py) times as long as that validation, so at
    most about a tenth of a time budget goes to validation whatever the validation set's size.

    ``snapshot_steps``: optimiser steps at which the weights are also kept (``snapshots/step_<N>.pt``),
    so that runs of different speeds can be compared at an equal number of steps.

    ``class_weights``: one per class, background first, for the loss's cross-entropy (or focal) term;
    None weighs every class 1."""

    max_epochs: int = 100
    max_minutes: float | None = None
    iterations_per_epoch: int | None = None
    batch_size: int = 2
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.99
    scheduler: Literal["poly", "cosine", "constant"] = "poly"
    warmup_epochs: int = 0
    loss: str = "dice_ce"
    class_weights: list[float] | None = None
    grad_accumulation: int = 1
    grad_clip: float | None = 12.0
    amp: bool = True
    cpu_bf16: bool = False
    channels_last: bool = True
    compile: bool = False
    val_every: int = 1
    freeze_encoder_epochs: int = 0
    encoder_lr_scale: float = 1.0
    seed: int = 0
    progress: bool = True
    final_validation: bool = True
    snapshot_steps: list[int] = field(default_factory=list)


@dataclass
class InferConfig:
    """Sliding-window prediction settings, used by validation and ``medseg infer`` alike."""

    overlap: float = 0.5
    sw_batch_size: int = 4
    blend: Literal["gaussian", "constant"] = "gaussian"
    stitch_device: Literal["auto", "cpu", "cuda"] = "auto"
    mirror_axes: list[int] = field(default_factory=list)


@dataclass
class PretrainConfig:
    """Self-supervised pretraining of the Swin UNETR encoder (``medseg pretrain``; Tang et al. 2022).

    Three proxy tasks on random sub-volumes of ``patch_size``: rotation prediction (0/90/180/270
    degrees in the axial plane, cross-entropy), contrastive coding of two augmented views (NT-Xent at
    ``temperature``) and masked-volume inpainting (L1 on the dropped cubes: ``mask_fraction`` of the
    cubes of side ``mask_block`` voxels are replaced by noise). The total loss weighs them.
    """

    patch_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    rotation_weight: float = 1.0
    contrastive_weight: float = 1.0
    inpainting_weight: float = 1.0
    temperature: float = 0.5
    embedding_dim: int = 512
    mask_fraction: float = 0.3
    mask_block: int = 16


@dataclass
class Compare2DConfig:
    """``medseg compare``: 2D models trained on the same axial slices with the same ``train`` budget,
    then scored on the same validation slices.

    ``groups`` merges dataset classes: each entry is the new class name, then the classes it merges
    (``[Parotid, RightParotid, LeftParotid]``); each source class keeps its own instances.
    ``stuff_classes`` (names after grouping) are regions that semantic heads segment; every other
    foreground class is a "thing" whose instances (connected components) Mask R-CNN detects.
    The panoptic merge (Panoptic FPN) pastes instances with score >= ``score_threshold`` by score,
    drops one when more than ``overlap_threshold`` of its mask is already taken, and drops stuff
    regions under ``stuff_area_limit`` pixels; instance masks are binarised at ``mask_threshold``.
    ``anchor_sizes`` (pixels, one per FPN level), ``aspect_ratios`` (anchor height / width), and
    ``rpn_samples_per_image`` / ``roi_samples_per_image`` (anchors and proposals sampled per image for the
    losses) are planned from the instances of the training slices where left null
    (``planning/detection.py``); ``detections_per_image`` caps Mask R-CNN's output (and so the
    detections mask AP sees). ``detector_lr`` replaces ``train.lr`` for Mask R-CNN and the panoptic
    model, which train from scratch less stably than the semantic networks; null keeps ``train.lr``.
    ``backbone`` is the ResNet under the FPN of Mask R-CNN and the panoptic model; ``backbone_norm``
    ``group`` (GroupNorm) trains from scratch with small batches where BatchNorm's statistics are noisy;
    ``fpn_channels`` is the width of the FPN and of the heads on it (the paper's 256, or narrower);
    ``detector_scale`` enlarges the slices inside the detectors (anchors in slice pixels scale with it).
    ``slice_size`` is the in-plane size every slice is padded or cropped to;
    ``val_slices_per_case`` evenly spaced axial slices of each validation case are scored.
    """

    models: list[str] = field(default_factory=lambda: ["fcn", "unet2d", "maskrcnn", "panoptic"])
    groups: list[list[str]] = field(default_factory=list)
    stuff_classes: list[str] = field(default_factory=list)
    slice_size: list[int] = field(default_factory=lambda: [128, 128])
    val_slices_per_case: int = 10
    examples: int = 4
    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    stuff_area_limit: int = 8
    mask_threshold: float = 0.5
    anchor_sizes: list[int] | None = None
    aspect_ratios: list[float] | None = None
    rpn_samples_per_image: int | None = None
    roi_samples_per_image: int | None = None
    detections_per_image: int = 20
    detector_lr: float | None = None
    maskrcnn_v2: bool = False
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet50"
    backbone_norm: Literal["batch", "group"] = "batch"
    fpn_channels: int = 256
    detector_scale: float = 1.0


Command = Literal["train", "pretrain", "compare"]


@dataclass
class Config:
    """The whole run: ``name`` labels the run folder, ``command`` says which command it is for (and so
    which sections it reads and saves); the sections hold everything else."""

    name: str = "run"
    command: Command = "train"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    patch: PatchConfig = field(default_factory=PatchConfig)
    slice2d: Slice2DConfig = field(default_factory=Slice2DConfig)
    lowres: LowresConfig = field(default_factory=LowresConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    compare: Compare2DConfig = field(default_factory=Compare2DConfig)


STRATEGY_SECTIONS = ("patch", "slice2d", "lowres")
COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("data", "model", "train", "infer", *STRATEGY_SECTIONS),
    "pretrain": ("data", "model", "train", "pretrain"),
    "compare": ("data", "model", "train", "compare"),
}
# Keys that were renamed: a file that still uses one gets told the new name.
MOVED_KEYS = {
    "data.patch_size": "patch.patch_size (the patch strategy) or pretrain.patch_size",
    "compare.batch_size": "train.batch_size",
    "compare.max_minutes": "train.max_minutes",
    "compare.max_steps": "train.max_epochs and train.iterations_per_epoch",
}


def saved_sections(config: Config) -> tuple[str, ...]:
    """The sections a run of ``config.command`` uses; ``train`` keeps only its own strategy's section."""
    sections = COMMAND_SECTIONS[config.command]
    if config.command == "train":
        sections = tuple(s for s in sections if s not in STRATEGY_SECTIONS or s == config.model.strategy)
    return sections


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
        raise MedsegError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
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


def _apply(obj: Any, values: dict[str, Any], sections: Sequence[str], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if prefix or f.name in ("name", "command", *sections)]
    for key, value in values.items():
        full = f"{prefix}{key}"
        if full in MOVED_KEYS:
            raise MedsegError(f"config key '{full}' is now {MOVED_KEYS[full]}")
        if key not in names:
            where = f"in '{prefix[:-1]}'" if prefix else "at the top level"
            raise MedsegError(f"unknown config key '{full}'; valid keys {where}: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise MedsegError(f"config key '{full}': expected a section (mapping), got {value!r}")
            _apply(current, value, sections, f"{full}.")
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


def _build(command: str, layers: list[tuple[dict[str, Any], str]]) -> Config:
    """Defaults, then each layer of values in turn (errors prefixed with the layer's source), then the
    value checks. A layer naming another command is refused: its sections would go unread."""
    config = Config(command=command)  # type: ignore[arg-type]
    sections = COMMAND_SECTIONS[command]
    for values, source in layers:
        declared = values.get("command", command)
        if declared != command:
            raise MedsegError(f"{source}: this is a config for 'medseg {declared}', not 'medseg {command}'")
        try:
            _apply(config, values, sections)
        except MedsegError as exc:
            raise MedsegError(f"{source}: {exc}" if source else str(exc)) from None
    check_values(config)
    return config


def shipped_pipelines() -> dict[str, Path]:
    """The pipelines installed with the package (the repository's ``pipelines/`` folder), by name."""
    from importlib.resources import files

    try:
        folder = files("medseg.pipelines")
    except ModuleNotFoundError:  # an installation without them
        return {}
    return {entry.name.removesuffix(".yaml"): Path(str(entry)) for entry in folder.iterdir()
            if entry.name.endswith(".yaml")}


def find_config(path: str | Path) -> Path:
    """A config file by path, or else a shipped pipeline by name (``hippocampus_patch``), so that pip
    and Docker users, who have no repository, start from the same pipelines."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    shipped = shipped_pipelines()
    name = candidate.name.removesuffix(".yaml")
    if candidate.parent == Path(".") and name in shipped:
        return shipped[name]
    names = ", ".join(sorted(shipped)) or "none installed"
    raise MedsegError(f"{path}: config file not found, and no shipped pipeline has that name ({names})")


def read_yaml_config(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file or shipped pipeline (``yaml.safe_load``: no code from the file
    runs)."""
    path = find_config(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MedsegError(f"{path}: invalid YAML{where}") from None
    if not isinstance(values, dict):
        raise MedsegError(f"{path}: expected a mapping of config sections at the top level")
    return values


def _dotted(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        keys |= _dotted(value, f"{dotted}.") if isinstance(value, dict) and value else {dotted}
    return keys


def user_keys(path: str | Path | None, overrides: list[str]) -> set[str]:
    """The dotted keys a user set explicitly, in CONFIG and on the command line: planning leaves them
    (and the values coupled to them) alone."""
    values = read_yaml_config(path) if path is not None else {}
    return _dotted(values) | _dotted(parse_overrides(overrides))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, command: str = "train",
                planned: dict[str, Any] | None = None) -> Config:
    """Defaults, then ``planned`` values, then the YAML file, then the dotted overrides, for ``command``:
    every value is type-checked and range-checked, and only that command's sections are accepted."""
    layers = [(planned, "plan")] if planned else []
    layers += [(read_yaml_config(path), str(path))] if path is not None else []
    return _build(command, [*layers, (parse_overrides(overrides or []), "")])


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """Rebuild a config saved in a run folder or checkpoint, then apply dotted overrides."""
    command = values.get("command", "train")
    if command not in COMMAND_SECTIONS:
        raise MedsegError(f"saved config: unknown command {command!r}")
    return _build(command, [(values, ""), (parse_overrides(overrides or []), "")])


def config_to_dict(config: Config) -> dict[str, Any]:
    """The name, the command and the sections that command uses, as plain values."""
    values = {"name": config.name, "command": config.command}
    return values | {section: dataclasses.asdict(getattr(config, section)) for section in saved_sections(config)}


def save_config(config: Config, path: str | Path) -> None:
    from medseg.io import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


# -- value checks: one place for every range a key must respect ------------------------------------------


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise MedsegError(f"config key '{key}': expected {expected}, got {value!r}")


def _sizes(key: str, value: list[int], count: int) -> None:
    _require(len(value) == count and min(value, default=0) >= 1, key, f"{count} positive sizes", value)


def _check_data(d: DataConfig) -> None:
    _require(0.0 < d.val_fraction < 1.0, "data.val_fraction", "a fraction between 0 and 1", d.val_fraction)
    _require(0.0 < d.train_fraction <= 1.0, "data.train_fraction", "a fraction in (0, 1]", d.train_fraction)
    _require(d.num_folds == 0 or d.num_folds >= 2, "data.num_folds", "0 (no folds) or at least 2", d.num_folds)
    _require(d.num_folds == 0 or 0 <= d.fold < d.num_folds, "data.fold", f"a fold in 0..{d.num_folds - 1}", d.fold)
    _require(d.samples_per_volume >= 1, "data.samples_per_volume", "at least 1", d.samples_per_volume)
    _require(0.0 <= d.pos_fraction <= 1.0, "data.pos_fraction", "a fraction between 0 and 1", d.pos_fraction)
    _require(d.max_cases is None or d.max_cases >= 2, "data.max_cases", "at least 2 cases", d.max_cases)
    _require(d.num_workers >= 0, "data.num_workers", "0 or more", d.num_workers)
    if d.spacing is not None:
        _require(len(d.spacing) == 3 and min(d.spacing) > 0, "data.spacing", "three positive sizes in mm", d.spacing)
    if d.intensity_window is not None:
        w = d.intensity_window
        _require(len(w) == 2 and w[0] < w[1], "data.intensity_window", "[low, high] with low < high", w)
    if d.normalization == "ct_zscore":
        _require(d.intensity_window is not None and d.intensity_mean is not None and bool(d.intensity_std),
                 "data.normalization", "intensity_window, intensity_mean and a positive intensity_std with ct_zscore",
                 d.normalization)
    if d.sampling == "classes" and d.class_ratios is not None:
        _require(min(d.class_ratios) >= 0 and sum(d.class_ratios) > 0, "data.class_ratios",
                 "non-negative ratios, not all 0", d.class_ratios)
    _require(all(a in (0, 1, 2) for a in d.augment.flip_axes), "data.augment.flip_axes", "axes among 0, 1, 2",
             d.augment.flip_axes)


def _check_model(m: ModelConfig) -> None:
    _require(len(m.channels) == len(m.strides) + 1, "model.channels",
             f"one more entry than model.strides ({len(m.strides)})", m.channels)
    flat = [v for s in m.strides for v in (s if isinstance(s, list) else [s])]
    _require(min(flat, default=1) >= 1, "model.strides", "positive strides", m.strides)
    if m.kernel_sizes is not None:
        _require(len(m.kernel_sizes) == len(m.channels), "model.kernel_sizes",
                 f"one entry per level ({len(m.channels)})", m.kernel_sizes)
    _require(0.0 <= m.dropout < 1.0, "model.dropout", "a probability in [0, 1)", m.dropout)
    _require(m.num_res_units >= 0, "model.num_res_units", "0 or more", m.num_res_units)
    _require(m.window_size is None or m.window_size >= 2, "model.window_size", "a window of 2 or more tokens, or null",
             m.window_size)


def _check_train(t: TrainConfig) -> None:
    _require(t.max_epochs >= 0, "train.max_epochs", "0 (load weights, train nothing) or more", t.max_epochs)
    _require(t.max_minutes is None or t.max_minutes > 0, "train.max_minutes", "a positive budget or null",
             t.max_minutes)
    _require(t.iterations_per_epoch is None or t.iterations_per_epoch >= 1, "train.iterations_per_epoch",
             "at least 1 or null", t.iterations_per_epoch)
    _require(t.batch_size >= 1, "train.batch_size", "at least 1", t.batch_size)
    _require(t.lr > 0, "train.lr", "a positive learning rate", t.lr)
    _require(t.weight_decay >= 0, "train.weight_decay", "0 or more", t.weight_decay)
    _require(t.warmup_epochs >= 0, "train.warmup_epochs", "0 or more", t.warmup_epochs)
    _require(t.grad_accumulation >= 1, "train.grad_accumulation", "at least 1", t.grad_accumulation)
    _require(t.grad_clip is None or t.grad_clip > 0, "train.grad_clip", "a positive norm or null", t.grad_clip)
    _require(t.val_every >= 0, "train.val_every", "0 (auto) or a number of epochs", t.val_every)
    if t.class_weights is not None:
        _require(len(t.class_weights) > 0 and min(t.class_weights) > 0, "train.class_weights",
                 "a positive weight per class or null", t.class_weights)
    _require(t.freeze_encoder_epochs >= 0, "train.freeze_encoder_epochs", "0 or more", t.freeze_encoder_epochs)
    _require(t.encoder_lr_scale > 0, "train.encoder_lr_scale", "a positive factor", t.encoder_lr_scale)
    _require(all(isinstance(n, int) and n >= 1 for n in t.snapshot_steps), "train.snapshot_steps",
             "a list of step counts, each at least 1", t.snapshot_steps)


def _check_infer(i: InferConfig) -> None:
    _require(0.0 <= i.overlap < 1.0, "infer.overlap", "a fraction in [0, 1)", i.overlap)
    _require(i.sw_batch_size >= 1, "infer.sw_batch_size", "at least 1", i.sw_batch_size)
    _require(all(a in (0, 1, 2) for a in i.mirror_axes), "infer.mirror_axes", "axes among 0, 1, 2", i.mirror_axes)


def _check_slice2d(s: Slice2DConfig) -> None:
    _require(bool(s.axes) and len(set(s.axes)) == len(s.axes) and all(a in (0, 1, 2) for a in s.axes),
             "slice2d.axes", "distinct axes among 0, 1, 2", s.axes)
    _require(s.fusion != "single" or s.fusion_axis in s.axes, "slice2d.fusion_axis", f"one of slice2d.axes {s.axes}",
             s.fusion_axis)
    _sizes("slice2d.patch_size", s.patch_size, 2)
    _require(s.context_slices >= 0, "slice2d.context_slices", "0 or more", s.context_slices)
    _require(s.refine_rounds >= 0 and s.refine_margin >= 0, "slice2d.refine_rounds/refine_margin", "0 or more",
             [s.refine_rounds, s.refine_margin])
    _require(0.0 <= s.refine_stop_dice <= 1.0, "slice2d.refine_stop_dice", "a Dice between 0 and 1", s.refine_stop_dice)


def _check_pretrain(p: PretrainConfig) -> None:
    size, block = p.patch_size, p.mask_block
    _sizes("pretrain.patch_size", size, 3)
    _require(size[0] == size[1], "pretrain.patch_size",
             "equal first two sides (views are rotated in the axial plane)", size)
    _require(block >= 1 and not any(s % block for s in size), "pretrain.mask_block",
             f"a cube side that divides every side of pretrain.patch_size {size}", block)
    _require(0.0 < p.mask_fraction < 1.0, "pretrain.mask_fraction", "a fraction between 0 and 1", p.mask_fraction)
    _require(p.temperature > 0, "pretrain.temperature", "a positive temperature", p.temperature)
    weights = [p.rotation_weight, p.contrastive_weight, p.inpainting_weight]
    _require(min(weights) >= 0 and sum(weights) > 0, "pretrain.*_weight", "non-negative weights, not all 0", weights)


FPN_SIZE_MULTIPLE = 32  # the coarsest FPN level of the 2D detectors
FPN_LEVELS = 5  # P2-P5 and the max-pooled P6: one anchor size each


def _check_compare(c: Compare2DConfig, model: ModelConfig) -> None:
    _require(bool(c.models) and len(set(c.models)) == len(c.models), "compare.models", "distinct model names",
             c.models)
    _sizes("compare.slice_size", c.slice_size, 2)
    product = math.prod(s if isinstance(s, int) else max(s) for s in model.strides)
    multiple = math.lcm(FPN_SIZE_MULTIPLE, product)  # U-Nets need their stride product too
    _require(not any(s % multiple for s in c.slice_size), "compare.slice_size",
             f"two sides divisible by {multiple}", c.slice_size)
    _require(c.anchor_sizes is None or (len(c.anchor_sizes) == FPN_LEVELS and min(c.anchor_sizes) >= 1),
             "compare.anchor_sizes", f"null (planned) or {FPN_LEVELS} positive sizes (one per FPN level)",
             c.anchor_sizes)
    _require(c.aspect_ratios is None or (len(c.aspect_ratios) >= 1 and min(c.aspect_ratios) > 0),
             "compare.aspect_ratios", "null (planned) or positive height/width ratios", c.aspect_ratios)
    for key in ("rpn_samples_per_image", "roi_samples_per_image"):
        _require(getattr(c, key) is None or getattr(c, key) >= 1, f"compare.{key}", "null (planned) or at least 1",
                 getattr(c, key))
    _require(c.fpn_channels >= 32 and c.fpn_channels % 32 == 0, "compare.fpn_channels",
             "a multiple of 32 (GroupNorm's groups)", c.fpn_channels)
    _require(1.0 <= c.detector_scale <= 4.0, "compare.detector_scale", "between 1 and 4", c.detector_scale)
    _require(c.detector_lr is None or c.detector_lr > 0, "compare.detector_lr", "null or a positive learning rate",
             c.detector_lr)
    _require(c.val_slices_per_case >= 1, "compare.val_slices_per_case", "at least 1", c.val_slices_per_case)
    _require(c.detections_per_image >= 1, "compare.detections_per_image", "at least 1", c.detections_per_image)
    for key in ("score_threshold", "overlap_threshold", "mask_threshold"):
        _require(0.0 <= getattr(c, key) <= 1.0, f"compare.{key}", "a value between 0 and 1", getattr(c, key))
    _require(c.stuff_area_limit >= 0, "compare.stuff_area_limit", "0 or more pixels", c.stuff_area_limit)
    _require(c.examples >= 0, "compare.examples", "0 or more", c.examples)


def check_values(config: Config) -> None:
    """Every range check of the sections ``config.command`` uses; the first problem as one line."""
    _check_data(config.data)
    _check_model(config.model)
    _check_train(config.train)
    if config.command == "train":
        if config.data.partial_classes:
            _require(config.train.loss in MARGINAL_LOSSES, "train.loss",
                     f"one of {', '.join(MARGINAL_LOSSES)} with data.partial_classes", config.train.loss)
        _check_infer(config.infer)
        names, weights = config.data.class_names, config.train.class_weights
        _require(not names or weights is None or len(weights) == len(names), "train.class_weights",
                 f"one weight per class, background first ({len(names or [])})", weights)
        _require(config.model.strategy != "slice2d" or not config.infer.mirror_axes, "infer.mirror_axes",
                 "none with the slice2d strategy, which fuses its axes' predictions instead", config.infer.mirror_axes)
        _sizes("patch.patch_size", config.patch.patch_size, 3)
        _check_slice2d(config.slice2d)
        _sizes("lowres.grid_size", config.lowres.grid_size, 3)
        _require(config.lowres.refine_margin_mm >= 0, "lowres.refine_margin_mm", "0 or more",
                 config.lowres.refine_margin_mm)
    elif config.command == "pretrain":
        _check_pretrain(config.pretrain)
    else:
        _require(not config.data.partial_classes, "data.partial_classes",
                 "none with medseg compare (its 2D models have no partial-label loss)", config.data.partial_classes)
        _check_compare(config.compare, config.model)
