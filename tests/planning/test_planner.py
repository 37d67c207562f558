"""Planning: the rules on fingerprints built by hand, and a plan of a real folder that trains as written."""

import numpy as np
import pytest
import torch
import yaml
from monai.transforms import ScaleIntensityRanged

from medseg.cli import main
from medseg.config import load_config
from medseg.data.transforms import intensity_transform
from medseg.planning import plan_dataset, rules
from medseg.planning.fingerprint import CaseFingerprint, Fingerprint
from medseg.planning.planner import make_plan
from tests.helpers import TINY_COMMON


def _case(spacing, shape, offsets=None, voxels=None, values=None) -> CaseFingerprint:
    k = len(voxels) if voxels is not None else 3
    return CaseFingerprint("c", list(spacing), list(shape), list(shape),
                           np.asarray(values if values is not None else np.linspace(-100, 300, 50), dtype=np.float32),
                           list(voxels if voxels is not None else [1000, 100, 100]),
                           offsets if offsets is not None else [[0.0, 0.0, 0.0]] * k)


def test_target_spacing_is_the_median_and_refines_a_thick_axis_with_few_slices():
    iso = Fingerprint([_case([1.0, 1.0, 1.0], [100, 100, 100]), _case([1.2, 1.2, 1.4], [90, 90, 90]),
                       _case([0.8, 0.8, 1.2], [110, 110, 100])])
    assert rules.target_spacing(iso).value == [1.0, 1.0, 1.2]
    # Thick slices (5 mm, 3x the in-plane spacing) and few of them: the 10th percentile, not the median.
    thick = Fingerprint([_case([0.7, 0.7, s], [256, 256, 20]) for s in (2.5, 5.0, 5.0, 5.0, 6.0, 5.0, 5.0)])
    planned = rules.target_spacing(thick)
    assert planned.value[2] == pytest.approx(np.percentile([2.5, 5, 5, 5, 6, 5, 5], 10), abs=1e-3)
    assert "anisotropic" in planned.reason


def test_pooling_skips_the_thick_axis_until_the_others_catch_up():
    strides, kernels, divisor = rules.pooling([0.8, 0.8, 3.2], [160, 160, 24])
    assert strides[1] == [2, 2, 1] and strides[2] == [2, 2, 1]  # 1.6 then 3.2 mm in plane
    assert kernels[0] == [3, 3, 1] and kernels[-1] == [3, 3, 3]  # in-plane kernels on thick slices first
    assert [2, 2, 2] in strides  # once the spacings agree, every axis pools
    assert all(p % d == 0 for p, d in zip([160, 160, 24], divisor))
    # Isotropic: every axis pools every stage, while the bottleneck keeps at least 4 voxels.
    strides, _, divisor = rules.pooling([1.0, 1.0, 1.0], [40, 56, 40])
    assert strides[1:] == [[2, 2, 2]] * 3 and divisor == [8, 8, 8]


def test_patch_fits_the_budget_and_the_network():
    patch = rules.fit_patch([1.0, 1.0, 1.0], np.array([35.0, 50.0, 35.0]), 160_000)
    assert patch == [40, 56, 40]  # what nnU-Net plans for MSD hippocampus
    big = rules.fit_patch([1.0, 1.0, 1.0], np.array([300.0, 300.0, 300.0]), 64**3)
    assert np.prod(big) <= 64**3 * 1.15 and all(s % 16 == 0 for s in big)


def test_a_patch_that_covers_the_image_takes_one_crop_per_image_and_more_images():
    small = Fingerprint([_case([1, 1, 1], [35, 50, 35]) for _ in range(156)])
    planned = make_plan(small, ["background", "a", "b"], "mri", "patch", "cpu", 10).as_dict()
    assert planned["data"]["samples_per_volume"] == 1
    cap = int(35 * 50 * 35 * 156 * rules.MAX_DATASET_SHARE // np.prod(planned["patch"]["patch_size"]))
    assert planned["train"]["batch_size"] == min(8, cap)  # nnU-Net's 5% cap: 5 images of 40x56x40
    large = Fingerprint([_case([1, 1, 1], [160, 160, 160]) for _ in range(50)])
    planned = make_plan(large, ["background", "a", "b"], "ct", "patch", "cpu", 10).as_dict()
    assert planned["data"]["samples_per_volume"] == 2 and planned["train"]["batch_size"] >= 1


def test_mirroring_leaves_out_the_axis_along_which_two_classes_mirror_each_other():
    cases = [_case([1, 1, 1], [64, 64, 64], offsets=[[0, 0, 0], [-30 - i, 2, 1], [31 + i, 1, 0]])
             for i in range(5)]  # classes 1 and 2: left and right of the centre along R
    planned = rules.mirror_axes(Fingerprint(cases), ["background", "left", "right"])
    assert planned.value == [1, 2] and "left and right mirror each other" in planned.reason
    # A large and a small structure on opposite sides do not mirror each other: every axis flips.
    cases = [_case([1, 1, 1], [64] * 3, offsets=[[0, 0, 0], [-5, 0, 0], [40, 0, 0]], voxels=[9000, 5000, 50])
             for _ in range(5)]
    assert rules.mirror_axes(Fingerprint(cases), ["background", "big", "small"]).value == [0, 1, 2]


def test_patch_and_lowres_plans_predict_mirrored_along_the_axes_training_mirrors_along():
    cases = [_case([1, 1, 1], [64, 64, 64], offsets=[[0, 0, 0], [-30 - i, 2, 1], [31 + i, 1, 0]])
             for i in range(5)]
    for strategy in ("patch", "lowres"):
        plan = make_plan(Fingerprint(cases), ["background", "left", "right"], "ct", strategy, "cpu", 10)
        assert plan.as_dict()["infer"]["mirror_axes"] == plan.as_dict()["data"]["augment"]["flip_axes"] == [1, 2]
        assert "infer.mirror_axes" not in plan.without({"data.augment.flip_axes"}).as_dict().get("infer", {})
    slices = make_plan(Fingerprint(cases), ["background", "left", "right"], "ct", "slice2d", "cpu", 10)
    assert "mirror_axes" not in slices.as_dict().get("infer", {})  # it fuses three axes instead


def test_images_smaller_than_the_patch_budget_get_the_spare_compute_as_width():
    names = ["background", "a", "b"]
    small = Fingerprint([_case([1, 1, 1], [35, 50, 35]) for _ in range(50)])
    large = Fingerprint([_case([1, 1, 1], [160, 160, 160]) for _ in range(50)])
    widths = {(name, minutes): make_plan(fp, names, "mri", "patch", "cpu", minutes).values["model"]["channels"]
              for name, fp in (("small", small), ("large", large)) for minutes in (10, 25)}
    assert widths["large", 10].value[0] == widths["large", 25].value[0] == 16  # the patch took the whole budget
    # 40x56x40 covers the image: 10 minutes hold 1.8x its voxels (16 * 1.8 ** 0.5 -> 24), 25 minutes 4.5x.
    assert (widths["small", 10].value[0], widths["small", 25].value[0]) == (24, 32)
    assert "widened to 24" in widths["small", 10].reason
    assert make_plan(small, names, "mri", "patch", "cuda", 60).as_dict()["model"]["channels"][0] == 32  # the cap


def test_ct_normalisation_is_clipping_then_a_foreground_zscore():
    values = np.random.default_rng(0).normal(40.0, 120.0, 20_000)
    fp = Fingerprint([_case([1, 1, 1], [8] * 3, values=values)])
    planned = {k: p.value for k, p in rules.ct_normalisation(fp).items()}
    config = load_config(None, ["data.modality=ct", *(f"data.{k}={v}" for k, v in planned.items())])
    image = torch.as_tensor(np.random.default_rng(1).normal(0.0, 400.0, (1, 6, 6, 6)), dtype=torch.float32)
    out = intensity_transform(config.data)({"image": image})["image"]
    lo, hi = planned["intensity_window"]
    expected = (np.clip(image.numpy(), lo, hi) - planned["intensity_mean"]) / planned["intensity_std"]
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)
    assert isinstance(intensity_transform(config.data), ScaleIntensityRanged)


def test_the_budget_changes_the_plan():
    fp = Fingerprint([_case([1, 1, 1], [160, 160, 160]) for _ in range(10)])
    names = ["background", "a", "b"]
    small = make_plan(fp, names, "mri", "patch", "cpu", 10).as_dict()
    large = make_plan(fp, names, "mri", "patch", "cuda", 60).as_dict()
    assert np.prod(small["patch"]["patch_size"]) < np.prod(large["patch"]["patch_size"])
    assert small["model"]["channels"][0] < large["model"]["channels"][0] == 32
    assert (small["model"]["network"], large["model"]["network"]) == ("unet", "dynunet")
    cpu = make_plan(fp, names, "mri", "lowres", "cpu", 30).as_dict()
    gpu = make_plan(fp, names, "mri", "lowres", "cuda", 60).as_dict()
    assert np.prod(gpu["lowres"]["grid_size"]) > np.prod(cpu["lowres"]["grid_size"])
    short = make_plan(fp, names, "mri", "lowres", "cpu", 10).as_dict()
    assert short["lowres"]["grid_size"] == [64, 64, 64]  # the CPU floor, 64x64x48's voxels
    assert cpu["lowres"]["grid_size"] == [80, 80, 80]  # the patch's 480k voxels of 30 CPU-minutes
    assert (gpu["model"]["channels"], gpu["model"]["kernel_sizes"]) == ([16, 32, 64, 128, 256], [5] * 5)  # the paper's
    assert (cpu["model"]["channels"], cpu["model"]["kernel_sizes"]) == ([8, 16, 32, 64, 128], [3] * 5)


@pytest.mark.parametrize("strategy", ["patch", "slice2d", "lowres"])
def test_bf16_is_planned_only_for_a_cpu_that_computes_it(strategy):
    fp = Fingerprint([_case([1, 1, 1], [96, 96, 96]) for _ in range(10)])
    names = ["background", "a", "b"]
    native = make_plan(fp, names, "mri", strategy, "cpu", 10, native_bf16=True)
    emulated = make_plan(fp, names, "mri", strategy, "cpu", 10, native_bf16=False)
    assert native.as_dict()["train"]["cpu_bf16"] is True and "natively" in native.values["train"]["cpu_bf16"].reason
    assert emulated.as_dict()["train"]["cpu_bf16"] is False
    on_gpu = make_plan(fp, names, "mri", strategy, "cuda", 10, native_bf16=True).keys()
    assert "train.cpu_bf16" not in on_gpu


@pytest.mark.parametrize("network", ["unet", "dynunet"])
def test_per_axis_strides_build_and_keep_thick_slices(network):
    """Both planned networks take a stride per axis; sides must divide by each axis's own product."""
    from medseg.errors import MedsegError
    from medseg.networks import build_network_3d

    config = load_config(None, [f"model.network={network}", "model.channels=[4,8,16]",
                                "model.strides=[[2,2,1],[2,2,2]]", "model.num_res_units=1"])
    net = build_network_3d(config.model, 1, 3, [32, 32, 8])
    assert net(torch.zeros(1, 1, 32, 32, 8)).shape == (1, 3, 32, 32, 8)
    with pytest.raises(MedsegError, match=r"divisible by \[4, 4, 2\]"):
        build_network_3d(config.model, 1, 3, [32, 32, 9])


def test_a_plan_of_a_folder_trains_as_written(phantom_dir, tmp_path, capsys):
    plan_file = tmp_path / "plan.yaml"
    assert main(["plan", str(phantom_dir), "-o", str(plan_file), "--minutes", "5"]) == 0
    text = plan_file.read_text(encoding="utf-8")
    assert "# budget assumed: cpu, 5 minutes" in text and "# median spacing of" in text
    values = yaml.safe_load(text)
    assert values["model"]["network"] == "unet" and values["data"]["sampling"] == "classes"
    config = load_config(plan_file)
    assert config.patch.patch_size == values["patch"]["patch_size"]
    run = tmp_path / "run"
    small = [*TINY_COMMON, "model.channels=[4,8,16]", "model.strides=[2,2]",
             "patch.patch_size=[32,32,32]"]
    assert main(["train", str(plan_file), "--output", str(run), *small]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["sampling"] == "classes" and saved["data"]["normalization"] == "ct_zscore"
    assert main(["plan", str(phantom_dir), "-o", str(plan_file)]) == 2  # an edited plan is never overwritten
    assert main(["plan", str(phantom_dir), "-o", str(phantom_dir / "plan.yaml")]) == 2
    assert "inside the dataset folder" in capsys.readouterr().err


def test_planning_reads_every_case_once_and_names_each_class(phantom_dir):
    planned = plan_dataset(phantom_dir, strategy="slice2d", minutes=10)
    assert planned.fingerprint.num_cases == 5  # the training split of 6 cases
    assert planned.plan.as_dict()["slice2d"]["patch_size"][0] % 16 == 0
    assert "cases containing each class: liver 5" in "\n".join(planned.plan.summary)


def test_train_with_no_config_plans_from_the_data_and_keeps_the_plan(phantom_dir, tmp_path):
    run = tmp_path / "run"
    small = [*TINY_COMMON, "model.channels=[4,8,16]", "model.strides=[2,2]",
             "patch.patch_size=[32,32,32]", "train.max_minutes=2"]
    assert main(["train", "--data", str(phantom_dir), "--output", str(run), *small]) == 0
    plan = (run / "plan.yaml").read_text(encoding="utf-8")
    assert "# budget assumed: cpu, 2 minutes" in plan
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["name"] == f"{phantom_dir.name}_patch"
    assert saved["data"]["normalization"] == "ct_zscore" and saved["data"]["sampling"] == "classes"
    assert saved["model"]["channels"] == [4, 8, 16]  # the overrides win over the plan
    assert not any(p.name == "plan.yaml" for p in phantom_dir.rglob("*"))  # nothing written into the data


def test_a_value_set_by_the_user_takes_its_coupled_values_out_of_the_plan():
    fp = Fingerprint([_case([1, 1, 1], [40, 56, 40]) for _ in range(4)])
    plan = make_plan(fp, ["background", "a", "b"], "ct", "patch", "cpu", 10)
    assert {"patch.patch_size", "model.strides", "data.intensity_mean", "data.sampling"} <= plan.keys()
    kept = plan.without({"patch.patch_size", "data.intensity_window", "train.lr"})
    assert not kept.keys() & {"patch.patch_size", "model.strides", "model.channels",
                              "data.normalization", "data.intensity_mean", "data.intensity_std"}
    assert {"model.network", "model.num_res_units"} <= kept.keys()  # the network's kind, sized by the user
    assert not plan.without({"model.network"}).keys() & {"model.num_res_units", "model.strides", "patch.patch_size"}
    assert {"data.spacing", "data.sampling", "train.batch_size"} <= kept.keys()
    assert "not planned: data.intensity_mean" in kept.summary[-1]
    thick = make_plan(fp, ["background", "a", "b"], "ct", "patch", "cpu", 10, spacing=[1.0, 1.0, 4.0])
    assert thick.as_dict()["patch"]["patch_size"] != plan.as_dict()["patch"]["patch_size"]  # planned for it


@pytest.mark.parametrize(("strategy", "network"), [("slice2d", "unet2d"), ("lowres", "vnet")])
def test_a_hand_set_width_keeps_the_strategys_planned_network(strategy, network):
    fp = Fingerprint([_case([1, 1, 1], [64, 64, 64]) for _ in range(4)])
    kept = make_plan(fp, ["background", "a", "b"], "ct", strategy, "cpu", 10).without({"model.channels"})
    planned_keys = kept.keys()
    assert kept.as_dict()["model"]["network"] == network and "model.strides" not in planned_keys


def test_classes_missing_from_many_cases_are_named_but_never_declared_partial():
    lacking_b = [_case([1, 1, 1], [40, 56, 40], voxels=[1000, 100, 0]) for _ in range(3)]
    fp = Fingerprint([_case([1, 1, 1], [40, 56, 40]) for _ in range(5)] + lacking_b)
    planned = rules.partial_classes(fp, ["background", "a", "b"])
    assert planned.value == [] and "b (in 5/8)" in planned.reason and "a (" not in planned.reason
    assert {"data.partial_classes"} <= make_plan(fp, ["background", "a", "b"], "ct", "patch", "cpu", 10).keys()


def test_a_config_wins_over_the_plan_and_overrides_win_over_both(phantom_dir, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("name: mine\ndata:\n  intensity_window: [-200, 300]\n"
                      "patch:\n  patch_size: [32, 32, 32]\nmodel:\n  channels: [4, 8, 16]\n  strides: [2, 2]\n"
                      "train:\n  batch_size: 3\n", encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(config), "--data", str(phantom_dir), "--output", str(run), *TINY_COMMON,
                 "train.batch_size=2"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["name"] == "mine" and saved["patch"]["patch_size"] == [32, 32, 32]
    assert saved["data"]["intensity_window"] == [-200, 300] and saved["data"]["normalization"] == "auto"
    assert saved["data"]["sampling"] == "classes"  # not in the config: planned
    assert saved["train"]["batch_size"] == 2  # the override beats the config
    plan = (run / "plan.yaml").read_text(encoding="utf-8")
    assert "not planned: data.intensity_mean" in plan and "\n  patch_size:" not in plan
    assert f"under {config}" in plan and "\nname:" not in plan
    said = next(line for line in capsys.readouterr().out.splitlines() if "go with a value you set" in line)
    assert "data.normalization=auto" in said and "data.intensity_mean=" in said  # what applies instead
    assert "patch_size" not in said and "intensity_window" not in said  # the user's own values


def test_train_without_config_or_data_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train"])
    assert exit_info.value.code == 2 and "--data DIR to plan one" in capsys.readouterr().err
