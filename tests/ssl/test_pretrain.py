"""Swin UNETR self-supervised pretraining: proxy tasks, losses, the CLI run, and encoder transfer."""

import json

import pytest
import torch
import yaml
from monai.networks.nets import SwinUNETR

from medseg.cli import main
from medseg.config import ModelConfig, load_config
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.trainer import Trainer
from medseg.errors import MedsegError
from medseg.networks import build_network_3d
from medseg.ssl.proxy_tasks import mask_cubes, rotate
from medseg.ssl.task import SwinPretrainer
from medseg.ssl.transfer import load_pretrained_encoder, pretrained_window_size
from medseg.strategies import build_segmenter
from tests.helpers import TINY, TINY_COMMON

PIPELINE = "pipelines/hippocampus_pretrain.yaml"
SWIN_TINY = ["model.network=swin_unetr", "model.size=tiny", "patch.patch_size=[64,64,64]"]
# The encoder takes 32^3 in pretraining (its decoder uses group norm); fine-tuning Swin UNETR needs 64^3.
PRETRAIN = [*TINY_COMMON, "model.network=swin_unetr", "model.size=tiny", "pretrain.patch_size=[32,32,32]",
            "pretrain.mask_block=8", "data.spacing=[3.0,3.0,3.0]", "data.modality=ct", "train.batch_size=2",
            "pretrain.embedding_dim=32"]


def _swin(size="tiny", window_size=None) -> torch.nn.Module:
    return build_network_3d(ModelConfig(network="swin_unetr", size=size, window_size=window_size), 1, 3, [64, 64, 64])


def test_rotation_views_turn_back_to_the_input():
    x = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 1, 4, 4, 3)
    views, k = rotate(x, torch.Generator().manual_seed(3))
    assert views.shape == x.shape and k.shape == (2,) and set(k.tolist()) <= {0, 1, 2, 3}
    for view, original, turns in zip(views, x, k):
        torch.testing.assert_close(torch.rot90(view, -int(turns), dims=(1, 2)), original)


def test_masked_cubes_are_whole_blocks_of_noise():
    x = torch.zeros(2, 1, 8, 8, 8)
    masked, mask = mask_cubes(x + 5.0, fraction=0.25, block=4, generator=torch.Generator().manual_seed(0))
    cubes = mask.view(2, 1, 2, 4, 2, 4, 2, 4).float().mean(dim=(3, 5, 7))
    assert set(cubes.unique().tolist()) == {0.0, 1.0}  # every cube all in or all out
    assert cubes.sum(dim=(1, 2, 3, 4)).tolist() == [2.0, 2.0]  # a quarter of 8 cubes in each volume
    assert torch.equal(masked[~mask], torch.full_like(masked[~mask], 5.0))


def test_each_pretraining_loss_decreases_over_a_few_steps():
    torch.manual_seed(0)
    task = SwinPretrainer(load_config(overrides=PRETRAIN, command="pretrain"))
    noise = torch.rand(2, 1, 40, 40, 40, generator=torch.Generator().manual_seed(0))
    image = torch.nn.functional.avg_pool3d(noise, 9, stride=1)  # two smooth, different 32^3 volumes
    image = (image - image.mean()) / image.std()
    optimizer = torch.optim.Adam(task.parameters(), lr=5e-4)
    history = []
    for _ in range(8):  # the same views every step: the losses must fall on this batch
        losses = task._losses(image, torch.Generator().manual_seed(1))[0]
        history.append({k: float(v.detach()) for k, v in losses.items()})
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    for key, factor in (("loss_rotation", 0.5), ("loss_contrastive", 0.5), ("loss_inpainting", 0.9)):
        assert history[-1][key] < factor * history[0][key], (key, [h[key] for h in history])


def test_pretrain_sizes_are_checked():
    with pytest.raises(MedsegError, match="pretrain.patch_size"):
        load_config(overrides=[*PRETRAIN, "pretrain.patch_size=[32,64,32]"], command="pretrain")
    with pytest.raises(MedsegError, match="pretrain.mask_block"):
        load_config(overrides=[*PRETRAIN, "pretrain.mask_block=12"], command="pretrain")
    with pytest.raises(MedsegError, match="model.network"):
        SwinPretrainer(load_config(overrides=[*PRETRAIN, "model.network=unet"], command="pretrain"))


def _research_layout(network: torch.nn.Module) -> dict:
    """A state dict laid out like the released ``model_swinvit.pt`` (module. prefix, timm MLP names)."""
    weights = {}
    for key, value in network.swinViT.state_dict().items():
        key = key.replace(".mlp.linear1.", ".mlp.fc1.").replace(".mlp.linear2.", ".mlp.fc2.")
        weights[f"module.{key}"] = value.clone()
    weights["module.rotation_head.weight"] = torch.zeros(4, 192)
    weights["module.contrastive_head.weight"] = torch.zeros(512, 192)
    weights["module.conv.0.weight"] = torch.zeros(96, 192, 3, 3, 3)
    return {"epoch": 100, "state_dict": weights}


def test_model_swinvit_layout_loads_like_monai_load_from(tmp_path):
    torch.manual_seed(1)
    source = _swin(window_size=7)  # the released weights' window
    path = tmp_path / "model_swinvit.pt"
    torch.save(_research_layout(source), path)
    assert pretrained_window_size(path) == 7
    ours, monai = _swin(window_size=7), _swin(window_size=7)
    report = load_pretrained_encoder(ours, path)
    assert report.matched == len(source.swinViT.state_dict()) and report.missing == []
    assert sorted(report.unexpected) == [
        "module.contrastive_head.weight", "module.conv.0.weight", "module.rotation_head.weight"
    ]
    monai.load_from(torch.load(path, weights_only=True))  # MONAI's reader of the same file
    for key, value in source.swinViT.state_dict().items():
        torch.testing.assert_close(ours.swinViT.state_dict()[key], value, msg=key)
        torch.testing.assert_close(monai.swinViT.state_dict()[key], value, msg=key)
    with pytest.raises(MedsegError, match="shape"):
        load_pretrained_encoder(_swin("small", window_size=7), path)
    with pytest.raises(MedsegError, match="model.window_size the encoder was pretrained with"):
        load_pretrained_encoder(_swin(window_size=4), path)
    (tmp_path / "notes.pt").write_text("not weights")
    with pytest.raises(MedsegError, match="notes.pt: cannot load pretrained weights"):
        load_pretrained_encoder(ours, tmp_path / "notes.pt")
    torch.save({"state_dict": {"decoder.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(MedsegError, match="no Swin UNETR encoder tensors"):
        load_pretrained_encoder(ours, tmp_path / "other.pt")
    assert isinstance(ours, SwinUNETR)


def test_pretrain_run_resumes_and_its_encoder_fine_tunes_with_nothing_missing(phantom_dir, tmp_path, capsys):
    run = tmp_path / "ssl"
    assert main(["pretrain", PIPELINE, "--data", str(phantom_dir), "--output", str(run), *PRETRAIN]) == 0
    for name in ("config.yaml", "split.json", "best.pt", "last.pt", "train_log.jsonl"):
        assert (run / name).is_file(), name
    assert main(["pretrain", PIPELINE, "--output", str(run), "--resume", "train.max_epochs=2"]) == 0
    epochs = [json.loads(line) for line in (run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert {"train_loss_rotation", "train_loss_contrastive", "train_loss_inpainting", "val_loss"} <= set(epochs[-1])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert "val/inpainting_original_masked_inpainted" in events.Tags()["images"]
    assert {"train/loss_inpainting", "val/loss"} <= set(events.Tags()["scalars"])

    capsys.readouterr()
    fine = tmp_path / "fine"
    assert main(["train", "pipelines/hippocampus_swin.yaml", "--data", str(phantom_dir), "--output", str(fine), *TINY,
                 *SWIN_TINY, "data.modality=ct", f"model.pretrained={run}", "train.max_epochs=0"]) == 0
    assert "126 tensors matched, 0 missing" in capsys.readouterr().out
    encoder = {k: v for k, v in load_checkpoint(run / "best.pt")["model"].items() if k.startswith("network.swinViT.")}
    tuned = build_segmenter(load_config(overrides=[*TINY, *SWIN_TINY, "data.class_names=[a,b,c,d]"]))
    assert load_pretrained_encoder(tuned.network, run / "best.pt").missing == []
    for key, value in encoder.items():
        torch.testing.assert_close(tuned.state_dict()[key], value)

    # Unset, the window is the pretrained encoder's, whatever window would tile the fine-tuning patch.
    assert pretrained_window_size(run) == 4  # pretrained at 32^3: 16^3 tokens
    released = tmp_path / "model_swinvit.pt"
    torch.save(_research_layout(_swin(window_size=7)), released)
    fine7 = tmp_path / "fine7"
    assert main(["train", "pipelines/hippocampus_swin.yaml", "--data", str(phantom_dir), "--output", str(fine7),
                 *TINY, *SWIN_TINY, "data.modality=ct", f"model.pretrained={released}", "train.max_epochs=0"]) == 0
    assert "0 missing" in capsys.readouterr().out
    assert yaml.safe_load((fine7 / "config.yaml").read_text(encoding="utf-8"))["model"]["window_size"] == 7


def test_encoder_freezing_and_learning_rate_scale():
    config = load_config(overrides=[*TINY, *SWIN_TINY, "data.class_names=[a,b]", "train.freeze_encoder_epochs=1",
                                    "train.encoder_lr_scale=0.1"])
    segmenter = build_segmenter(config)
    trainer = Trainer(segmenter, config, "unused", None, None, torch.device("cpu"))
    encoder_group = trainer.optimizer.param_groups[1]
    assert encoder_group["lr_scale"] == 0.1
    assert {id(p) for p in encoder_group["params"]} == {id(p) for p in segmenter.network.swinViT.parameters()}
    trainer._set_encoder_frozen()
    assert not any(p.requires_grad for p in segmenter.network.swinViT.parameters())
    assert all(p.requires_grad for p in segmenter.network.decoder1.parameters())
    trainer.epoch = 1
    trainer._set_encoder_frozen()
    assert all(p.requires_grad for p in segmenter.network.swinViT.parameters())
    unet = load_config(overrides=[*TINY, "data.class_names=[a,b]", "train.freeze_encoder_epochs=1"])
    with pytest.raises(MedsegError, match="freeze_encoder_epochs"):
        Trainer(build_segmenter(unet), unet, "unused", None, None, torch.device("cpu"))


def test_pretrain_bad_input_is_one_line(phantom_dir, tmp_path, capsys):
    assert main(["pretrain", PIPELINE, "--data", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such file or folder" in err and len(err.strip().splitlines()) == 1
    assert main(["pretrain", PIPELINE, "--data", str(tmp_path)]) == 2
    assert "folder holds no images" in capsys.readouterr().err
    argv = ["pretrain", PIPELINE, "--data", str(phantom_dir), "--output", str(tmp_path / "r"), "model.network=unet"]
    assert main(argv) == 2
    assert "set it to swin_unetr" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_pretraining_under_torchrun_ddp(phantom_dir, tmp_path):
    """Both views go through one forward pass, as DDP requires; rank 0 alone writes the run folder."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    run = tmp_path / "ddp"
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "-m", "medseg.cli", "pretrain", PIPELINE, "--data", str(phantom_dir),
         "--output", str(run), *PRETRAIN, "train.max_minutes=null"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("run folder:") == 1
    assert load_pretrained_encoder(_swin(), run / "last.pt").missing == []
