"""One contract for every volume strategy and network: tiny networks, CPU, batch 1."""

import dataclasses

import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from medseg.config import load_config
from medseg.strategies import STRATEGIES, build_segmenter
from tests.helpers import TINY

VARIANTS = [
    ("patch", ["model.network=unet"]),
    ("patch", ["model.network=dynunet"]),
    ("patch", ["model.network=dynunet", "model.deep_supervision=true"]),
    ("slice2d", ["model.network=unet2d"]),
    ("slice2d", ["model.network=unet2d", "slice2d.shared_model=true", "slice2d.context_slices=1"]),
    ("slice2d", ["model.network=fcn", "slice2d.axes=[2]", "slice2d.fusion=single"]),
    ("patch", ["model.network=unetr", "model.size=tiny"]),
    ("patch", ["model.network=swin_unetr", "model.size=tiny", "model.use_v2=true", "patch.patch_size=[64,64,64]"]),
    ("lowres", ["model.network=vnet", "lowres.grid_size=[32,32,32]"]),
    ("lowres", ["model.network=unet", "lowres.grid_size=[32,32,16]"]),
]


def _segmenter(strategy, extra):
    config = load_config(None, [*TINY, f"model.strategy={strategy}", *extra])
    data = dataclasses.replace(config.data, class_names=["background", "a", "b"], modality="ct",
                               intensity_window=[-100.0, 200.0])
    torch.manual_seed(0)
    return build_segmenter(dataclasses.replace(config, data=data))


def _batch(size=(32, 32, 32)):
    """A whole volume as validation sees it: a bright cube (class 1) and a dark slab (class 2) on noise."""
    g = torch.Generator().manual_seed(0)
    image = torch.randn((1, 1, *size), generator=g) * 0.1
    label = torch.zeros((1, 1, *size), dtype=torch.uint8)
    image[..., 8:20, 8:20, 8:20] += 1.0
    label[..., 8:20, 8:20, 8:20] = 1
    image[..., 24:28, :, :] -= 1.0
    label[..., 24:28, :, :] = 2
    return {"image": image, "label": label}


def _on_grid(segmenter, batch):
    """A whole-volume batch put on the strategy's own grid (what its cached volumes look like)."""
    keys = ("image", "label") if "label" in batch else ("image",)
    grid = Compose(segmenter.grid_transforms(with_label="label" in batch))
    item = grid({k: MetaTensor(batch[k][0]) for k in keys})
    return {k: item[k][None] for k in keys}


def _training_batch(segmenter, volumes=2, annotated=None):
    """Training samples made by the strategy's own sampling transforms from cached-like volumes. With
    ``annotated`` (which classes the case annotates), the other classes are left out of the label map,
    as a case that did not contour them has them."""
    volume = _on_grid(segmenter, _batch())
    image, label = volume["image"][0], volume["label"][0].clone()
    extra = {}
    if annotated is not None:
        extra = {"annotated": annotated}
        label[~annotated[label.long()]] = 0
    sampling = Compose(segmenter.train_sampling())
    sampling.set_random_state(seed=0)
    samples = [sampling({"image": MetaTensor(image), "label": MetaTensor(label), **extra}) for _ in range(volumes)]
    return list_data_collate(samples)


def test_every_registered_strategy_is_covered():
    assert {s for s, _ in VARIANTS} == set(STRATEGIES.names())


@pytest.mark.parametrize(("strategy", "extra"), VARIANTS, ids=[f"{s}-{'-'.join(e)}" for s, e in VARIANTS])
class TestSegmenterContract:
    def test_training_step_gives_finite_loss_and_gradients(self, strategy, extra):
        segmenter = _segmenter(strategy, extra).train()
        losses = segmenter.training_step(_training_batch(segmenter, volumes=6))  # slices of every axis
        assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
        losses["loss"].backward()
        grads = [p.grad for p in segmenter.parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)

    def test_loss_decreases_when_fitting_one_batch(self, strategy, extra):
        segmenter = _segmenter(strategy, extra).train()
        optimizer = torch.optim.Adam(segmenter.parameters(), lr=1e-2)
        batch = _training_batch(segmenter)
        losses = []
        for _ in range(15):
            optimizer.zero_grad()
            loss = segmenter.training_step(batch)["loss"]
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.7 * losses[0]

    def test_predict_volume_covers_any_shape_and_probabilities_sum_to_one(self, strategy, extra):
        segmenter = _segmenter(strategy, extra).eval()
        image = _on_grid(segmenter, {"image": torch.randn((1, 1, 37, 29, 41))})["image"][0]
        shape = tuple(image.shape[1:])
        prediction = segmenter.segment(image)
        assert prediction.labels.shape == shape and prediction.labels.dtype == torch.uint8
        assert prediction.probabilities.shape == (3, *shape)
        assert prediction.probabilities.dtype in (torch.float32, torch.float16)  # float16 for whole-scan volumes
        torch.testing.assert_close(prediction.probabilities.float().sum(0), torch.ones(shape), atol=3e-3, rtol=0)
        torch.testing.assert_close(prediction.labels.long(), prediction.probabilities.argmax(0))

    def test_validation_step_gives_dice_per_class(self, strategy, extra):
        segmenter = _segmenter(strategy, extra).eval()
        with torch.no_grad():
            dice = segmenter.validation_step(_on_grid(segmenter, _batch()))["dice"]
        assert dice.shape == (1, 2)
        assert ((dice >= 0) & (dice <= 1)).all()

    def test_partially_labelled_cases_train_with_the_marginal_loss(self, strategy, extra):
        segmenter = _segmenter(strategy, [*extra, "data.partial_classes=[b]"]).train()
        unannotated_b = torch.tensor([True, True, False])
        batch = _training_batch(segmenter, volumes=6, annotated=unannotated_b)
        assert batch["annotated"].shape == (len(batch["image"]), 3)  # the flag survives the sampling
        loss = segmenter.training_step(batch)["loss"]
        assert torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in segmenter.parameters() if p.grad is not None)
        full = segmenter.training_step({**batch, "annotated": torch.ones_like(batch["annotated"])})["loss"]
        assert not torch.isclose(loss, full)  # b's unlabelled slab is background only where b is annotated

    def test_validation_leaves_unannotated_classes_unscored(self, strategy, extra):
        segmenter = _segmenter(strategy, [*extra, "data.partial_classes=[b]"]).eval()
        batch = {**_on_grid(segmenter, _batch()), "annotated": torch.tensor([[True, True, False]])}
        with torch.no_grad():
            dice = segmenter.validation_step(batch)["dice"]
        assert not dice[0, 0].isnan() and dice[0, 1].isnan()

    def test_state_dict_round_trip_gives_identical_predictions(self, strategy, extra):
        first = _segmenter(strategy, extra).eval()
        second = _segmenter(strategy, extra)
        torch.manual_seed(123)
        second = type(second)(second.config).eval()  # different initial weights
        second.load_state_dict(first.state_dict())
        image = _on_grid(first, {"image": torch.randn((1, 1, 32, 32, 32))})["image"][0]
        torch.testing.assert_close(first.segment(image).probabilities, second.segment(image).probabilities)


@pytest.mark.parametrize("strategy, extra", VARIANTS, ids=[f"{s}-{'-'.join(e)}" for s, e in VARIANTS])
def test_exported_networks_predict_as_the_trained_ones(strategy, extra, tmp_path):
    """``medseg export``'s TorchScript networks, loaded back in place of the trained ones, segment alike."""
    from medseg.inference.exported import load_networks
    from medseg.inference.exporter import write_network

    segmenter = _segmenter(strategy, extra).eval()
    volume = _on_grid(segmenter, {"image": _batch()["image"]})["image"][0].as_tensor()
    expected = segmenter.segment(volume).probabilities
    entries = []
    for index, (network, shape) in enumerate(segmenter.exported_networks()):
        write_network(network, shape, tmp_path / f"network_{index}.pt", "torchscript")
        entries.append({"file": f"network_{index}.pt"})
    segmenter.use_exported(load_networks(tmp_path, {"format": "torchscript", "networks": entries}, torch.device("cpu")))
    used = [network for network, _ in segmenter.exported_networks()]
    assert used and all(isinstance(network, torch.jit.ScriptModule) for network in used)
    torch.testing.assert_close(segmenter.segment(volume).probabilities, expected, atol=1e-4, rtol=1e-4)
