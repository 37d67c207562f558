from pathlib import Path

import pytest

from medseg.config import config_from_dict, config_to_dict, load_config, parse_overrides
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
def test_every_pipeline_loads(path):
    config = load_config(path)
    assert config.name == path.stem
