"""Every training command builds everything that can fail on user input (config values, optimizer,
schedule, network, loss, encoder groups, dataset discovery, headers) before it creates anything: a bad
value gets one line naming the key, exit status 2, and no folder left behind."""

import pytest

from medseg.cli import main
from tests.helpers import TINY, TINY_COMMON

PRETRAIN = [*TINY_COMMON, "model.network=swin_unetr", "model.size=tiny", "pretrain.patch_size=[32,32,32]",
            "pretrain.mask_block=8", "data.modality=ct"]
COMPARE = [*TINY_COMMON, "compare.slice_size=[32,32]", "compare.models=[unet2d]"]

BAD_VALUES = {
    "train": [
        ("train.optimizer=adamx", "train.optimizer"),
        ("train.scheduler=step", "train.scheduler"),
        ("train.loss=focalx", "train.loss"),
        ("model.network=unet4d", "model.network"),
        ("patch.patch_size=[30,30,30]", "patch.patch_size"),
        ("train.freeze_encoder_epochs=2", "train.freeze_encoder_epochs"),  # the unet has no encoder
        ("data.val_fraction=0", "data.val_fraction"),
    ],
    "pretrain": [
        ("train.optimizer=adamx", "train.optimizer"),
        ("pretrain.mask_block=5", "pretrain.mask_block"),
        ("pretrain.patch_size=[32,48,32]", "pretrain.patch_size"),
        ("model.size=huge", "model.size"),
        ("infer.overlap=0.5", "infer"),  # not a pretraining section
    ],
    "compare": [
        ("train.scheduler=step", "train.scheduler"),
        ("compare.models=[unet2d,vit]", "compare.models"),
        ("compare.score_threshold=2", "compare.score_threshold"),
        ("train.loss=focalx", "train.loss"),
    ],
}
CASES = [(command, override, key) for command, bad in BAD_VALUES.items() for override, key in bad]


@pytest.mark.parametrize("command, override, key", CASES, ids=[f"{c}:{o}" for c, o, _ in CASES])
def test_a_bad_value_leaves_no_folder_behind(phantom_dir, tmp_path, capsys, command, override, key):
    output = tmp_path / "run"
    settings = {"train": TINY, "pretrain": PRETRAIN, "compare": COMPARE}[command]
    config = tmp_path / "config.yaml"
    config.write_text(f"command: {command}\n" if command != "train" else "name: tiny\n")
    assert main([command, str(config), "--data", str(phantom_dir), "--output", str(output), *settings, override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"medseg {command}: error:") and key in err, err
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
