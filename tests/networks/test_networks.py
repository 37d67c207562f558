"""Network builders: presets and the size checks that give a clear error instead of a shape crash."""

import pytest
import torch

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.networks import NETWORKS_2D, NETWORKS_3D, build_network_2d, build_network_3d
from medseg.networks.volumetric import tiling_window


def _model(*overrides):
    return load_config(None, list(overrides)).model


def test_registries_list_every_network():
    assert NETWORKS_3D.names() == ["dynunet", "swin_unetr", "unet", "unetr", "vnet"]
    assert NETWORKS_2D.names() == ["fcn", "unet2d"]
    with pytest.raises(MedsegError, match="unknown 3D network 'swin'; valid names: dynunet, swin_unetr"):
        build_network_3d(_model("model.network=swin"), 1, 2, [64, 64, 64])


@pytest.mark.parametrize(("network", "size", "factor"), [
    ("swin_unetr", [64, 64, 48], 32), ("unetr", [32, 32, 24], 16), ("vnet", [32, 32, 24], r"\[16, 16, 16\]"),
    ("unet", [32, 32, 30], r"\[16, 16, 16\]"),
])
def test_sizes_the_network_cannot_take_are_refused(network, size, factor):
    with pytest.raises(MedsegError, match=rf"patch.patch_size.*divisible by {factor}"):
        build_network_3d(_model(f"model.network={network}", "model.size=tiny"), 1, 2, size)


def test_vnet_keeps_the_papers_structure_at_any_width_kernel_and_stride():
    paper = build_network_3d(_model("model.network=vnet"), 1, 3, [32, 32, 32])
    kernels = {m.kernel_size for m in paper.modules() if isinstance(m, torch.nn.Conv3d) and m.stride == (1, 1, 1)}
    assert kernels == {(5, 5, 5), (1, 1, 1)}  # 5^3 convolutions; 1^3 for the input's skip and the head
    assert [len(stage.convs) for stage in paper.encoder] == [2, 3, 3, 3]  # after the stem's one
    assert [len(stage.convs) for stage in paper.decoder] == [3, 3, 2, 1]
    narrow = build_network_3d(_model("model.network=vnet", "model.channels=[8,16,32,64]",
                                     "model.strides=[2,2,[2,2,1]]", "model.kernel_sizes=[3,3,3,3]"), 1, 3, [32, 32, 16])
    assert narrow(torch.zeros((1, 1, 32, 32, 16))).shape == (1, 3, 32, 32, 16)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(narrow) < count(paper) / 50


def test_transformer_presets_and_options():
    with pytest.raises(MedsegError, match="model.size"):
        build_network_3d(_model("model.network=unetr", "model.size=huge"), 1, 2, [32, 32, 32])
    tiny = build_network_3d(_model("model.network=swin_unetr", "model.size=tiny"), 1, 2, [64, 64, 64])
    base = build_network_3d(_model("model.network=swin_unetr", "model.size=base", "model.use_v2=true",
                                   "model.gradient_checkpointing=true"), 1, 2, [64, 64, 64])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(base) > 10 * count(tiny)
    assert hasattr(base.swinViT, "layers1c") and not hasattr(tiny.swinViT, "layers1c")  # v2's extra conv blocks
    assert any(getattr(m, "use_checkpoint", False) for m in base.modules())


def test_fcn_takes_any_number_of_input_channels():
    fcn = build_network_2d(_model("model.network=fcn"), 5, 3, [64, 64]).eval()
    with torch.no_grad():
        assert fcn(torch.randn(1, 5, 48, 40)).shape == (1, 3, 48, 40)


def test_deep_supervision_adds_lower_resolution_outputs_only_while_training():
    model = _model("model.network=dynunet", "model.deep_supervision=true", "model.channels=[4,8,16,32]",
                   "model.strides=[2,2,2]")
    network = build_network_3d(model, 1, 3, [32, 32, 32])
    x = torch.zeros((2, 1, 32, 32, 32))
    assert network.train()(x).shape == (2, 2, 3, 32, 32, 32)  # full resolution and one decoder stage below it
    assert network.eval()(x).shape == (2, 3, 32, 32, 32)


def test_deep_supervision_is_refused_where_the_network_has_no_heads():
    with pytest.raises(MedsegError, match="model.deep_supervision.*only dynunet.*'unet'"):
        build_network_3d(_model("model.deep_supervision=true"), 1, 2, [32, 32, 32])
    with pytest.raises(MedsegError, match="model.deep_supervision.*two poolings"):
        build_network_3d(_model("model.network=dynunet", "model.deep_supervision=true", "model.channels=[4,8]",
                                "model.strides=[2]"), 1, 2, [32, 32, 32])


@pytest.mark.parametrize(("patch", "window"), [
    ([32, 32, 32], 4), ([64, 64, 64], 4), ([96, 96, 96], 6), ([160, 160, 160], 5), ([224, 224, 224], 7),
    ([64, 64, 96], 4),
])
def test_swin_window_tiles_the_first_stage_tokens(patch, window):
    assert tiling_window(patch) == window
    assert all(t % window == 0 for t in (side // 2 for side in patch))


def test_swin_unetr_takes_the_tiling_window_unless_one_is_set():
    planned = build_network_3d(_model("model.network=swin_unetr", "model.size=tiny"), 1, 2, [64, 64, 64])
    chosen = build_network_3d(_model("model.network=swin_unetr", "model.size=tiny", "model.window_size=7"), 1, 2,
                              [64, 64, 64])
    assert planned.swinViT.window_size == (4, 4, 4) and chosen.swinViT.window_size == (7, 7, 7)
    table = "layers1.0.blocks.0.attn.relative_position_bias_table"
    assert planned.swinViT.state_dict()[table].shape[0] == 7 ** 3  # (2w - 1)^3 relative offsets
