"""Speed settings change how tensors are stored and computed, never what a network computes."""

import pytest
import torch
from monai.networks.nets import UNet

import medseg.engine.speed as speed
from medseg.cli import main
from tests.helpers import TINY


def _unet(dims: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return UNet(dims, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_gives_the_same_outputs_and_gradients(dims):
    plain, fast = _unet(dims), speed.channels_last_(_unet(dims))
    formats = {2: torch.channels_last, 3: torch.channels_last_3d}
    weights = [p for p in fast.parameters() if p.dim() == dims + 2]
    assert weights and all(p.is_contiguous(memory_format=formats[dims]) for p in weights)
    x = torch.randn(2, 1, *[16] * dims)
    out_plain, out_fast = plain(x), fast(speed.channels_last_input(x))
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-4, atol=1e-5)
    out_plain.square().mean().backward()
    out_fast.square().mean().backward()
    for a, b in zip(plain.parameters(), fast.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5)
    assert plain.state_dict().keys() == fast.state_dict().keys()


def test_compiling_in_place_keeps_the_checkpoint_keys():
    network = _unet(3)
    keys = list(network.state_dict())
    network.compile()  # lazy: nothing is compiled until the first forward
    assert list(network.state_dict()) == keys


def test_emulated_bf16_is_refused_before_anything_is_written(phantom_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: False)
    run = tmp_path / "run"
    assert main(["train", "--data", str(phantom_dir), "--output", str(run), *TINY, "train.cpu_bf16=true"]) == 2
    assert "train.cpu_bf16" in capsys.readouterr().err and not run.exists()


def test_bf16_autocast_is_used_only_where_asked():
    with speed.autocast(torch.device("cpu"), cuda_amp=True, cpu_bf16=False):
        assert not torch.is_autocast_enabled("cpu")
    with speed.autocast(torch.device("cpu"), cuda_amp=False, cpu_bf16=True):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
