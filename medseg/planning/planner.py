"""Dataset + strategy + device + time budget -> a plan: config values, each with its reason.

The plan is a config layer: defaults, then the plan, then a user's CONFIG, then ``KEY=VALUE``
overrides. ``medseg plan`` writes it as a readable pipeline YAML with a comment beside every value.
"""

from __future__ import annotations

import builtins
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import medseg.planning.rules as rules
from medseg.planning.fingerprint import Fingerprint
from medseg.planning.rules import Planned

Device = Literal["cpu", "cuda"]
Strategy = Literal["patch", "slice2d", "lowres"]

# Relative training speed of a device (a CPU of this class is 1). Budget rules scale with
# minutes x speed, so a plan for 20 CPU minutes is small and one for a GPU hour is nnU-Net's.
DEVICE_SPEED = {"cpu": 1.0, "cuda": 40.0}
VOXELS_PER_COMPUTE_MINUTE = 16_000  # patch voxels a CPU-minute of budget buys (10 min -> about 54^3)
MIN_PATCH_VOXELS, MAX_PATCH_VOXELS = 32**3, 128**3
LOWRES_GPU_VOXELS, LOWRES_CPU_MIN_VOXELS = 128 * 128 * 64, 64 * 64 * 48  # the V-Net paper's grid; the CPU floor
UNBOUNDED_MINUTES = 600.0  # the budget a plan assumes when the run has no time limit

# Planned values that only make sense together. A user who sets one of them (in a CONFIG or on the
# command line) gets none of the plan's values for the others: a hand-set patch never meets strides
# planned for another patch, nor a hand-set window a mean and std measured for another window.
COUPLED_KEYS = (
    frozenset({"data.normalization", "data.intensity_window", "data.intensity_mean", "data.intensity_std"}),
    frozenset({"data.sampling", "data.class_ratios", "data.pos_fraction"}),
    frozenset({"train.batch_size", "data.samples_per_volume"}),
    frozenset({"data.augment.flip_axes", "infer.mirror_axes"}),
    frozenset({"patch.patch_size", "slice2d.patch_size", "slice2d.context_slices", "lowres.grid_size",
               "model.network", "model.channels", "model.strides", "model.kernel_sizes", "model.num_res_units"}),
)
# The network's kind stays planned when the user set only sizes of its group: a hand-set width or patch
# still wants the strategy's own network (a 2D U-Net for slice2d, the V-Net for lowres), not the
# config's default 3D U-Net. Setting the kind itself drops the whole group.
NETWORK_KIND = frozenset({"model.network", "model.num_res_units"})


@dataclass
class Plan:
    """Planned values by section, the budget they assume, and the fingerprint's summary lines."""

    values: dict[str, dict[str, Planned]] = field(default_factory=dict)
    budget: str = ""
    summary: list[str] = field(default_factory=list)

    def set(self, section: str, key: str, planned: Planned) -> None:
        self.values.setdefault(section, {})[key] = planned

    def keys(self) -> builtins.set[str]:
        """Every planned value's dotted key (``data.augment.flip_axes``)."""
        return {f"{section}.{key}" for section, keys in self.values.items() for key in keys}

    def without(self, user_keys: AbstractSet[str]) -> Plan:
        """The plan less the values the user set and every value coupled to one of them; the summary
        says which were left to the user."""
        dropped: builtins.set[str] = builtins.set(user_keys)
        for group in COUPLED_KEYS:
            if group & user_keys:
                kind_kept = group >= NETWORK_KIND and not NETWORK_KIND & user_keys
                dropped |= group - NETWORK_KIND if kind_kept else group
        left = sorted(self.keys() & dropped)
        values = {section: {k: p for k, p in keys.items() if f"{section}.{k}" not in dropped}
                  for section, keys in self.values.items()}
        summary = self.summary + ([f"set by the config or the command line, so not planned: {', '.join(left)}"]
                                  if left else [])
        return Plan({s: keys for s, keys in values.items() if keys}, self.budget, summary)

    def as_dict(self) -> dict[str, Any]:
        """Plain nested values (``data.augment`` under ``data``), the form a config layer takes."""
        nested: dict[str, Any] = {}
        for section, keys in self.values.items():
            node = nested
            for part in section.split("."):
                node = node.setdefault(part, {})
            node.update({key: p.value for key, p in keys.items()})
        return nested


def _compute(device: Device, minutes: float | None) -> float:
    return DEVICE_SPEED[device] * (minutes or UNBOUNDED_MINUTES)


def _width(compute: float, spare: float = 1.0) -> tuple[int, str]:
    """Base feature count: 32 (nnU-Net's) with a GPU-sized budget, narrower when compute is scarce.

    ``spare`` is the voxel budget over the patch's voxels: above 1 when the images are smaller than
    the budget allows a patch to be. That compute goes into width instead, as far as nnU-Net's 32: a
    convolution costs width squared a voxel, so the width grows with the square root of the spare.
    """
    if compute >= 200:
        return 32, "nnU-Net's width: the budget allows it"
    if compute >= 45:
        base, reason = 24, f"narrower than nnU-Net's 32: {compute:.0f} CPU-minutes of compute"
    else:
        base, reason = 16, f"narrow: {compute:.0f} CPU-minutes of compute buy more steps than width"
    widened = min(32, int(round(base * np.sqrt(max(spare, 1.0)) / 8)) * 8)
    if widened > base:
        return widened, (f"{base} widened to {widened}: the patch covers the median image and the budget holds "
                         f"{spare:.1f}x its voxels; a convolution costs width squared")
    return base, reason


def _channels(base: int, levels: int, cap: int = 320) -> list[int]:
    return [min(base * 2**i, cap) for i in range(levels)]


def _plan_patch(plan: Plan, fp: Fingerprint, spacing: list[float], compute: float) -> None:
    """nnU-Net's U-Net (``dynunet``: two convolutions a stage, kernels per axis) with a GPU-sized budget;
    below it MONAI's residual U-Net (one strided convolution and two residual units a stage), which on
    a CPU trains several times more steps in the same minutes at the same patch. Its first convolution
    is strided, so it has no full-resolution stage; adding one made a hippocampus step 5x slower and
    lost Dice at 10 minutes (the results page)."""
    median = rules.resampled_median_shape(fp, spacing)
    voxels = float(np.clip(VOXELS_PER_COMPUTE_MINUTE * compute, MIN_PATCH_VOXELS, MAX_PATCH_VOXELS))
    patch = rules.fit_patch(spacing, median, voxels)
    strides, kernels, _ = rules.pooling(spacing, patch)
    base, width_reason = _width(compute, voxels / float(np.prod(patch)))
    shape = "x".join(str(int(round(m))) for m in median)
    plan.set("patch", "patch_size", Planned(patch, f"covers the median cropped image ({shape}) within "
                                                   f"{voxels / 1e3:.0f}k voxels of budget"))
    plan.set("model", "channels", Planned(_channels(base, len(strides), 256 if compute < 200 else 320), width_reason))
    plan.set("model", "strides", Planned(strides[1:], "pool an axis while it is within 2x of the finest spacing"))
    if compute >= 200:
        plan.set("model", "network", Planned("dynunet", "nnU-Net's U-Net: kernels and strides per axis"))
        plan.set("model", "kernel_sizes", Planned(kernels, "3 on axes within 2x of the finest spacing, else 1"))
        plan.set("model", "num_res_units", Planned(0, "plain convolution blocks, as nnU-Net's default"))
    else:
        plan.set("model", "network", Planned("unet", "residual U-Net: far cheaper per step than nnU-Net's on a CPU"))
        plan.set("model", "num_res_units", Planned(2, "two residual units a stage"))
    preferred_samples = 4 if compute >= 200 or np.prod(patch) > 200_000 else 8
    per_volume = rules.samples_per_volume(patch, fp, spacing)
    plan.set("data", "samples_per_volume", per_volume)
    plan.set("train", "batch_size", rules.batch_size(patch, fp, spacing, preferred_samples, per_volume.value))


def _plan_slice2d(plan: Plan, fp: Fingerprint, spacing: list[float], compute: float) -> None:
    median = rules.resampled_median_shape(fp, spacing)
    side = 256 if compute >= 200 else 128
    in_plane = [int(min(side, max(32, np.ceil(m / 16) * 16))) for m in median[:2]]
    base, width_reason = _width(compute * 4)  # a 2D step is far cheaper than a 3D one
    plan.set("slice2d", "patch_size", Planned(in_plane, f"the median axial plane, at most {side}"))
    plan.set("slice2d", "context_slices", Planned(1, "2.5D: one neighbour each side"))
    plan.set("model", "network", Planned("unet2d", "2D U-Net per axis"))
    plan.set("model", "channels", Planned(_channels(base, 5, 512), width_reason))
    plan.set("model", "strides", Planned([2, 2, 2, 2], "four poolings"))
    plan.set("train", "batch_size", Planned(16 if compute < 200 else 12, "2D batch (nnU-Net uses 12 on a GPU)"))


def _plan_lowres(plan: Plan, fp: Fingerprint, spacing: list[float], compute: float) -> None:
    """The V-Net on the median image scaled into a voxel budget: the paper's 128x128x64 with a GPU-sized
    budget; on a CPU the patch strategy's voxel budget for the same minutes, at least 64x64x48. A grid
    coarser than the budget pays twice: the curve flattens early (OpenKBP at 64x64x48 gained 0.01 grid Dice
    over the last 40% of 30 minutes) and the upsampled prediction loses Dice at the scan's resolution
    (0.44 on the grid, 0.40 on the same cases at full resolution). Its 48x96x96 at 480k voxels scored 0.426
    on those cases in the same 30 minutes, with 1900 steps against 3450 (the results page)."""
    median = rules.resampled_median_shape(fp, spacing)
    budget = LOWRES_GPU_VOXELS if compute >= 200 else float(
        np.clip(VOXELS_PER_COMPUTE_MINUTE * compute, LOWRES_CPU_MIN_VOXELS, LOWRES_GPU_VOXELS))
    scale = min(1.0, (budget / float(np.prod(median))) ** (1 / 3))
    grid = [int(max(16, round(m * scale / 16) * 16)) for m in median]
    plan.set("lowres", "grid_size", Planned(grid, f"the median image scaled to about {budget / 1e3:.0f}k voxels"))
    plan.set("model", "network", Planned("vnet", "V-Net on the whole volume (Milletari et al.)"))
    plan.set("model", "strides", Planned([2, 2, 2, 2], "the paper's four 2x2x2 strided convolutions"))
    if compute >= 200:
        plan.set("model", "channels", Planned(_channels(16, 5), "the paper's widths: the budget allows them"))
        plan.set("model", "kernel_sizes", Planned([5] * 5, "the paper's 5x5x5 convolutions"))
    else:
        plan.set("model", "channels", Planned(_channels(8, 5), f"half the paper's widths: {compute:.0f} CPU-minutes "
                                                                "of compute buy more steps than width"))
        plan.set("model", "kernel_sizes", Planned([3] * 5, "3x3x3 convolutions: 5x5x5 costs 4.6x more a voxel"))
    plan.set("train", "batch_size", Planned(2, "two whole volumes"))


STRATEGY_RULES = {"patch": _plan_patch, "slice2d": _plan_slice2d, "lowres": _plan_lowres}


def make_plan(fp: Fingerprint, class_names: list[str], modality: str, strategy: Strategy, device: Device,
              minutes: float | None, spacing: list[float] | None = None, native_bf16: bool = False) -> Plan:
    """Every planned value for ``strategy`` on ``device`` within ``minutes`` (None: no time limit); the
    patch and topology for ``spacing`` where the user chose one; bf16 training where ``device`` is a CPU
    with ``native_bf16``."""
    compute = _compute(device, minutes)
    limit = f"{minutes:g} minutes" if minutes else f"no time limit (planned as {UNBOUNDED_MINUTES:g} minutes)"
    plan = Plan(budget=f"{device}, {limit}: {compute:.0f} CPU-minutes of compute")
    chosen = rules.target_spacing(fp) if spacing is None else Planned(spacing, "the config's spacing")
    plan.set("data", "spacing", chosen)
    if modality == "ct":
        for key, planned in rules.ct_normalisation(fp).items():
            plan.set("data", key, planned)
    else:
        plan.set("data", "normalization", Planned("zscore", f"{modality.upper()}: each image standardised on its own"))
    plan.set("data", "sampling", Planned("classes", "crops centred on each class: rare organs are seen"))
    plan.set("data", "class_ratios", rules.class_ratios(fp, class_names))
    plan.set("data", "partial_classes", rules.partial_classes(fp, class_names))
    flips = rules.mirror_axes(fp, class_names)
    plan.set("data.augment", "flip_axes", flips)
    STRATEGY_RULES[strategy](plan, fp, [float(v) for v in chosen.value], compute)
    if strategy != "slice2d":  # slice2d fuses three axes' predictions instead
        plan.set("infer", "mirror_axes", Planned(flips.value, "test-time mirroring along the axes training mirrors "
                                                              "along (nnU-Net's rule)"))
    if strategy == "patch":
        plan.set("infer", "sw_batch_size", Planned(1, "windows one at a time: on a CPU batching them is slower and "
                                                      "holds 4x the activations") if device == "cpu"
                 else Planned(4, "four windows a batch keep a GPU busy"))
    if device == "cpu":
        plan.set("train", "cpu_bf16", rules.cpu_bf16(native_bf16))
    iterations = 250 if compute >= 200 else 50
    plan.set("train", "iterations_per_epoch", Planned(iterations, "steps between validations and checkpoints"))
    plan.set("train", "max_epochs", Planned(1000, "the time budget ends the run first"))
    plan.set("train", "val_every", Planned(0, "validate after 9x its own time in training: under 10% of the budget"))
    plan.set("train", "max_minutes", Planned(minutes, "the budget this plan assumed"))
    stats = fp.intensity_statistics()
    median_shape = np.median(fp.cropped_shapes, axis=0).astype(int).tolist()
    plan.summary = [
        f"{fp.num_cases} training cases; median spacing {np.median(fp.spacings, axis=0).round(3).tolist()} mm, "
        f"median shape after cropping {median_shape}",
        f"foreground intensities: 0.5-99.5 percentiles [{stats.get('p00_5', 0):.1f}, {stats.get('p99_5', 0):.1f}], "
        f"mean {stats.get('mean', 0):.1f}, std {stats.get('std', 0):.1f}",
        "cases containing each class: " + ", ".join(
            f"{name} {int(n)}" for name, n in zip(class_names[1:], (fp.class_voxels() > 0).sum(axis=0)[1:])),
    ]
    return plan
