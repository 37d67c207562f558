import json
import time

import pytest
import torch

from medseg.config import load_config
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.trainer import Trainer, learning_rate
from medseg.errors import MedsegError
from medseg.strategies import build_segmenter
from medseg.workflows.training import train
from tests.helpers import TINY


def _weights(run_dir, name="last.pt"):
    return load_checkpoint(run_dir / name)["model"]


def test_resume_continues_exactly(phantom_dir, tmp_path):
    options = [*TINY, "train.max_epochs=2", "train.val_every=1"]
    straight = train(None, data_dir=phantom_dir, output=tmp_path / "straight", overrides=options, log=lambda _: None)
    half = train(None, data_dir=phantom_dir, output=tmp_path / "resumed", log=lambda _: None,
                 overrides=[*TINY, "train.max_epochs=1", "train.val_every=1"])
    assert load_checkpoint(half / "last.pt")["epoch"] == 1
    train(None, output=half, resume=True, overrides=["train.max_epochs=2"], log=lambda _: None)
    a, b = _weights(straight), _weights(half)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    lines = (half / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1]
    counted = [(json.loads(line)["step"], json.loads(line)["samples_seen"]) for line in lines]
    assert counted == [(2, 2), (4, 4)]  # 2 steps of 1 sample per epoch, counted on across the resume
    assert load_checkpoint(half / "last.pt")["samples_seen"] == load_checkpoint(straight / "last.pt")["samples_seen"]


def test_snapshots_keep_the_weights_at_the_requested_steps(phantom_dir, tmp_path):
    run = train(None, data_dir=phantom_dir, output=tmp_path / "snapshots", log=lambda _: None,
                overrides=[*TINY, "train.max_epochs=2", "train.snapshot_steps=[1,3,99]"])
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == ["step_0000001.pt", "step_0000003.pt"]
    first = load_checkpoint(run / "snapshots" / "step_0000001.pt")
    assert (first["global_step"], first["samples_seen"], first["epoch"]) == (1, 1, 0) and "optimizer" not in first
    assert first["model"].keys() == _weights(run).keys()
    assert 0 < first["elapsed_s"] < load_checkpoint(run / "last.pt")["elapsed_s"]


def test_run_folder_contents_and_weights_only_checkpoint(tiny_run):
    for name in ("config.yaml", "split.json", "best.pt", "last.pt", "train_log.jsonl"):
        assert (tiny_run / name).is_file(), name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tiny_run / "tensorboard")).Reload()
    assert {"train/loss", "val/mean_dice", "val/dice_liver", "lr"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["val/overlay_truth_vs_prediction"]
    state = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    assert state["config"]["data"]["class_names"] == ["background", "liver", "kidney", "spine"]
    assert state["config"]["data"]["modality"] == "ct" and len(state["config"]["data"]["intensity_window"]) == 2
    split = json.loads((tiny_run / "split.json").read_text(encoding="utf-8"))
    assert len(split["train"]) + len(split["validation"]) == 6 and not set(split["train"]) & set(split["validation"])


def test_time_budget_stops_after_the_epoch_that_crosses_it(phantom_dir, tmp_path):
    start = time.perf_counter()
    run = train(None, data_dir=phantom_dir, output=tmp_path / "budget", log=lambda _: None,
                overrides=[*TINY, "train.max_epochs=50", "train.max_minutes=0.0001"])
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert (run / "best.pt").is_file()
    assert time.perf_counter() - start < 60


def test_existing_run_folder_is_never_overwritten(phantom_dir, tiny_run):
    before = (tiny_run / "last.pt").read_bytes()
    with pytest.raises(MedsegError, match="exists and is not empty"):
        train(None, data_dir=phantom_dir, output=tiny_run, overrides=TINY, log=lambda _: None)
    assert (tiny_run / "last.pt").read_bytes() == before


def test_learning_rate_schedule_uses_epochs_or_time_whichever_is_further():
    config = load_config(None, ["train.lr=0.01", "train.max_epochs=10", "train.max_minutes=1"])
    assert learning_rate(config, 0, 0.0) == pytest.approx(0.01)
    assert learning_rate(config, 5, 0.0) == pytest.approx(0.01 * 0.5**0.9)
    assert learning_rate(config, 1, 45.0) == pytest.approx(0.01 * 0.25**0.9)
    cosine = load_config(None, ["train.lr=0.01", "train.max_epochs=10", "train.scheduler=cosine"])
    assert learning_rate(cosine, 5, 0.0) == pytest.approx(0.005)


def test_torchrun_ddp_on_cpu_writes_one_run_folder(phantom_dir, tmp_path):
    """Two gloo processes train together; only rank 0 writes, and the checkpoint has no DDP prefixes."""
    import subprocess
    import sys
    from pathlib import Path

    torchrun = Path(sys.executable).parent / "torchrun"
    run = tmp_path / "ddp"
    pipeline = Path(__file__).parents[2] / "pipelines" / "demo_patch.yaml"
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node=2", "-m", "medseg.cli", "train", str(pipeline),
         "--data", str(phantom_dir), "--output", str(run), *TINY, "train.max_minutes=null", "train.max_epochs=2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("run folder:") == 1
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and not any(".module." in key for key in state["model"])
    assert len((run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize("strategy, size", [("lowres", "lowres.grid_size=[64,64,64]"),
                                            ("patch", "patch.patch_size=[64,64,64]")])
@pytest.mark.parametrize("network", ["swin_unetr", "unetr"])
def test_encoder_freezing_works_with_every_strategy_whose_network_has_an_encoder(strategy, size, network):
    """The Trainer finds the encoder through ``network.encoder``, whatever the strategy."""
    config = load_config(None, [*TINY, f"model.strategy={strategy}", f"model.network={network}", "model.size=tiny",
                                size, "data.class_names=[a,b]", "train.freeze_encoder_epochs=1"])
    segmenter = build_segmenter(config)
    trainer = Trainer(segmenter, config, "unused", [], [], torch.device("cpu"))
    encoder = {id(p) for p in segmenter.network.encoder.parameters()}
    assert {id(p) for p in trainer.optimizer.param_groups[1]["params"]} == encoder
    trainer._set_encoder_frozen()
    assert all(not p.requires_grad for p in segmenter.network.encoder.parameters())
    assert any(p.requires_grad for p in segmenter.parameters() if id(p) not in encoder)


def test_automatic_validation_keeps_validation_under_a_tenth_of_the_training_time():
    from types import SimpleNamespace

    from medseg.engine.trainer import VALIDATION_TIME_RATIO

    def due(val_every, epoch, validation_s, trained_s):
        state = SimpleNamespace(config=load_config(None, [f"train.val_every={val_every}"]), epoch=epoch,
                                validation_s=validation_s, trained_since_validation_s=trained_s)
        return Trainer._validation_due(state)

    assert due(0, 0, None, 0.0)  # the first validation measures what one costs
    assert not due(0, 5, 10.0, VALIDATION_TIME_RATIO * 10.0 - 1)
    assert due(0, 5, 10.0, VALIDATION_TIME_RATIO * 10.0)
    assert [due(3, e, 1.0, 100.0) for e in range(4)] == [False, False, True, False]
    with pytest.raises(MedsegError, match="train.val_every"):
        load_config(None, ["train.val_every=-1"])


def test_the_final_validation_scores_the_last_weights_not_those_chosen_on_the_same_cases(phantom_dir, tmp_path,
                                                                                         monkeypatch):
    import medseg.workflows.training as training

    checkpoints = []
    predictor = training.Predictor

    def recording(run_dir, **options):
        checkpoints.append(options.get("checkpoint", "best.pt"))
        return predictor(run_dir, **options)

    monkeypatch.setattr(training, "Predictor", recording)
    run = train(None, data_dir=phantom_dir, output=tmp_path / "final", log=lambda _: None,
                overrides=[*TINY, "train.final_validation=true"])
    assert checkpoints == ["last.pt"]
    assert json.loads((run / "validation" / "metrics.json").read_text(encoding="utf-8"))["num_cases"] >= 1
