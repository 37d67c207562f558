import re
from pathlib import Path

import pytest
import yaml

from medseg.config import config_from_dict, config_to_dict, find_config, load_config, parse_overrides, user_keys
from medseg.errors import MedsegError

PIPELINES = sorted((Path(__file__).resolve().parents[1] / "pipelines").glob("*.yaml"))


def test_overrides_reach_nested_keys_with_types():
    config = load_config(None, ["train.max_epochs=7", "data.spacing=[1, 1, 2.5]", "data.augment.flip_axes=[0]"])
    assert config.train.max_epochs == 7
    assert config.data.spacing == [1.0, 1.0, 2.5]
    assert config.data.augment.flip_axes == [0]


def test_int_is_accepted_for_float_and_none_for_optional():
    config = load_config(None, ["train.lr=1", "train.max_minutes=null"])
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.max_minutes is None


def test_unknown_key_lists_valid_keys():
    with pytest.raises(MedsegError, match=r"unknown config key 'train.max_epoch'.*max_epochs"):
        load_config(None, ["train.max_epoch=3"])


def test_wrong_type_is_rejected():
    with pytest.raises(MedsegError, match=r"'train.max_epochs': expected int"):
        load_config(None, ["train.max_epochs=2.5"])
    with pytest.raises(MedsegError, match=r"'train.amp': expected bool"):
        load_config(None, ["train.amp=maybe"])


def test_malformed_override():
    with pytest.raises(MedsegError, match="expected KEY=VALUE"):
        parse_overrides(["train.max_epochs"])


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  nope: 1\n")
    with pytest.raises(MedsegError, match=r"bad.yaml: unknown config key 'train.nope'"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1,\n")
    with pytest.raises(MedsegError, match="broken.yaml: invalid YAML"):
        load_config(broken)


def test_round_trip_through_dict():
    config = load_config(None, ["model.channels=[8,16]", "model.strides=[2]"])
    assert config_from_dict(config_to_dict(config)) == config


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_every_pipeline_loads_for_the_command_it_declares(path):
    command = yaml.safe_load(path.read_text(encoding="utf-8")).get("command", "train")
    config = load_config(path, command=command)
    assert config.name == path.stem and config.command == command
    other = "train" if command != "train" else "compare"
    with pytest.raises(MedsegError, match=f"not 'medseg {other}'" if command != "train" else "unknown config key"):
        load_config(path, command=other) if command != "train" else load_config(path, ["compare.models=[fcn]"])


def test_shipped_pipelines_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no repository here, as for a pip or Docker user
    found = find_config("hippocampus_patch")
    assert found.read_text(encoding="utf-8") == (PIPELINES[0].parent / "hippocampus_patch.yaml").read_text(
        encoding="utf-8")
    assert find_config("openkbp_slice2d.yaml").name == "openkbp_slice2d.yaml"
    assert load_config("hippocampus_pretrain", command="pretrain").name == "hippocampus_pretrain"
    (tmp_path / "hippocampus_patch.yaml").write_text("name: mine\n", encoding="utf-8")
    assert load_config("hippocampus_patch.yaml").name == "mine"  # a file of that name comes first
    with pytest.raises(MedsegError, match=r"no_such: config file not found, and no shipped pipeline .*demo_patch"):
        find_config("no_such")
    with pytest.raises(MedsegError, match="config file not found"):
        find_config("elsewhere/hippocampus_patch.yaml")  # a path is a path


def test_user_keys_are_the_dotted_keys_of_config_and_overrides(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: x\ndata:\n  spacing: [1, 1, 1]\n  augment:\n    flip_axes: []\n", encoding="utf-8")
    assert user_keys(config, ["train.lr=0.1", "patch.patch_size=[8,8,8]"]) == {
        "name", "data.spacing", "data.augment.flip_axes", "train.lr", "patch.patch_size"}
    assert user_keys(None, []) == set()


def test_each_command_reads_only_its_own_sections():
    with pytest.raises(MedsegError, match=r"unknown config key 'pretrain'.*valid keys at the top level: .*patch"):
        load_config(None, ["pretrain.temperature=0.1"], command="train")
    with pytest.raises(MedsegError, match=r"unknown config key 'infer'"):
        load_config(None, ["infer.overlap=0.5"], command="compare")
    assert load_config(None, ["pretrain.temperature=0.1"], command="pretrain").pretrain.temperature == 0.1


@pytest.mark.parametrize("command, strategy, sections", [
    ("train", "patch", ["data", "model", "train", "infer", "patch"]),
    ("train", "lowres", ["data", "model", "train", "infer", "lowres"]),
    ("pretrain", "patch", ["data", "model", "train", "pretrain"]),
    ("compare", "patch", ["data", "model", "train", "compare"]),
])
def test_a_saved_config_holds_only_the_sections_its_run_used(command, strategy, sections):
    config = load_config(None, [f"model.strategy={strategy}"], command=command)
    saved = config_to_dict(config)
    assert list(saved) == ["name", "command", *sections]
    assert config_from_dict(saved) == config


@pytest.mark.parametrize("override, words", [
    ("data.patch_size=[32,32,32]", "now patch.patch_size"),
    ("train.optimizer=adamx", "expected adamw or sgd"),
    ("train.scheduler=step", "expected poly or cosine or constant"),
    ("slice2d.fusion=vote", "expected mean or majority or single"),
    ("data.val_fraction=1.5", "'data.val_fraction': expected a fraction between 0 and 1"),
    ("patch.patch_size=[32,32]", "'patch.patch_size': expected 3 positive sizes"),
    ("train.batch_size=0", "'train.batch_size': expected at least 1"),
    ("infer.overlap=1.0", "'infer.overlap'"),
    ("model.channels=[8,16,32]", "'model.channels': expected one more entry than model.strides"),
    ("train.class_weights=[1,0]", "'train.class_weights': expected a positive weight per class or null"),
])
def test_bad_values_fail_at_load_time_naming_the_key(override, words):
    with pytest.raises(MedsegError, match=re.escape(words)):
        load_config(None, [override])


def test_test_time_mirroring_is_refused_for_slice2d_only():
    with pytest.raises(MedsegError, match=r"'infer.mirror_axes': expected none with the slice2d strategy"):
        load_config(None, ["model.strategy=slice2d", "infer.mirror_axes=[0]"])
    for strategy in ("patch", "lowres"):
        assert load_config(None, [f"model.strategy={strategy}", "infer.mirror_axes=[0]"]).infer.mirror_axes == [0]


def test_partial_classes_need_a_loss_with_a_marginal_form_and_a_strategy():
    with pytest.raises(MedsegError, match="'train.loss': expected one of dice_ce, dice_topk10, dice, ce"):
        load_config(None, ["data.partial_classes=[a]", "train.loss=dice_focal"])
    with pytest.raises(MedsegError, match="'data.partial_classes': expected none with medseg compare"):
        load_config(None, ["data.partial_classes=[a]"], command="compare")
    assert load_config(None, ["data.partial_classes=[a, b]"]).data.partial_classes == ["a", "b"]


def test_class_weights_need_one_weight_per_class():
    names = "data.class_names=[background,a,b]"
    expected = r"'train.class_weights': expected one weight per class, background first \(3\)"
    with pytest.raises(MedsegError, match=expected):
        load_config(None, [names, "train.class_weights=[1,2]"])
    assert load_config(None, [names, "train.class_weights=[1,2,3]"]).train.class_weights == [1, 2, 3]


def test_compare_keys_that_shadowed_train_are_gone():
    for key, new in (("compare.batch_size=4", "train.batch_size"), ("compare.max_minutes=5", "train.max_minutes")):
        with pytest.raises(MedsegError, match=re.escape(new)):
            load_config(None, [key], command="compare")
