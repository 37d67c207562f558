"""lowres specifics: grid checks, and predictions brought back onto each input's own grid."""

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import write_volume
from medseg.strategies import build_segmenter
from medseg.workflows.training import train
from tests.helpers import TINY, oblique_affine

LOWRES = [*TINY, "model.strategy=lowres", "model.network=unet", "lowres.grid_size=[32,32,16]"]


@pytest.fixture(scope="module")
def lowres_run(phantom_dir, tmp_path_factory):
    return train(None, data_dir=phantom_dir, output=tmp_path_factory.mktemp("lowres") / "run", overrides=LOWRES,
                 log=lambda _: None)


def test_vnet_refuses_grids_it_cannot_take():
    config = load_config(None, [*TINY, "model.strategy=lowres", "model.network=vnet", "lowres.grid_size=[128,128,62]"])
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, class_names=["bg", "a"]))
    with pytest.raises(MedsegError, match=r"lowres.grid_size.*divisible by \[4, 4, 4\]"):
        build_segmenter(config)
    unet = dataclasses.replace(config, model=dataclasses.replace(config.model, network="unet"),
                               lowres=dataclasses.replace(config.lowres, grid_size=[128, 128, 62]))
    with pytest.raises(MedsegError, match=r"lowres.grid_size.*divisible by \[4, 4, 4\]"):
        build_segmenter(unet)


def _blob_scan(tmp_path, shape=(61, 47, 23), spacing=(0.7, 1.1, 3.3)):
    """A CT-like scan with a bright box at a known place, on an oblique, anisotropic grid."""
    image = np.full(shape, -1000, np.int16)
    image[5:56, 4:43, 2:21] = 40  # body
    image[20:40, 15:33, 8:16] = 900  # "bone" box
    path = tmp_path / "scan.nii.gz"
    write_volume(path, image, oblique_affine(spacing=spacing, degrees=25.0))
    return path, image


def test_prediction_has_the_input_shape_and_affine_and_probabilities_sum_to_one(lowres_run, tmp_path):
    path, image = _blob_scan(tmp_path)
    Predictor(lowres_run, device="cpu").predict_paths(path, tmp_path / "out", save_probabilities=True,
                                                      progress=False, log=lambda _: None)
    written = nib.load(str(tmp_path / "out" / "scan.nii.gz"))
    assert written.shape == image.shape
    np.testing.assert_array_equal(written.affine, nib.load(str(path)).affine)
    probabilities = np.load(tmp_path / "out" / "scan_probabilities.npz")["probabilities"].astype(np.float32)
    assert probabilities.shape == (4, *image.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=5e-3)


class _Threshold(torch.nn.Module):
    """A stand-in network: class 1 wherever the (normalised) image is bright."""

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(50.0))

    def forward(self, x):
        bright = (x - 0.9) * self.gain
        return torch.cat([-bright, bright, torch.full_like(x, -100.0), torch.full_like(x, -100.0)], dim=1)


def test_low_resolution_prediction_lands_on_the_right_voxels(lowres_run, tmp_path):
    """Resize down, predict, resample back: the box found on the 32x32x16 grid covers the true box."""
    path, image = _blob_scan(tmp_path)
    predictor = Predictor(lowres_run, device="cpu")
    predictor.segmenter.network = _Threshold()
    labels = predictor.predict_file(path).labels
    truth, found = image == 900, labels == 1
    dice = 2 * np.logical_and(found, truth).sum() / (found.sum() + truth.sum())
    assert dice > 0.8  # a 20x18x8-voxel box seen through a ~2 mm grid loses some of its edge
    affine = nib.load(str(path)).affine[:3, :3]
    offset_mm = affine @ (np.argwhere(found).mean(0) - np.argwhere(truth).mean(0))
    assert np.linalg.norm(offset_mm) < 1.0  # centred: no half-voxel shift from the resize


def test_cascade_refines_inside_the_low_resolution_region(lowres_run, tiny_run, tmp_path):
    """lowres finds the box; the patch model predicts again only on a crop around it."""
    path, image = _blob_scan(tmp_path)
    predictor = Predictor(lowres_run, device="cpu", overrides=[f"lowres.refine_run={tiny_run}",
                                                               "lowres.refine_margin_mm=3"])
    predictor.segmenter.network = _Threshold()
    seen = []
    refine = predictor.refiner.segmenter.segment
    predictor.refiner.segmenter.segment = lambda x: seen.append(tuple(x.shape)) or refine(x)
    result = predictor.predict_file(path, keep_probabilities=True)
    assert result.labels.shape == image.shape
    assert len(seen) == 1 and np.prod(seen[0]) < np.prod(image.shape)
    found = np.argwhere(result.labels > 0)
    truth = np.argwhere(image == 900)
    spacing = np.linalg.norm(result.affine[:3, :3], axis=0)
    reach = np.ceil(3.0 / spacing) + 2  # margin in voxels, plus the low-resolution edge
    if len(found):
        assert (found.min(0) >= truth.min(0) - reach).all() and (found.max(0) <= truth.max(0) + reach).all()
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=5e-3)


def test_cascade_needs_a_patch_run_with_the_same_classes(lowres_run):
    with pytest.raises(MedsegError, match="lowres.refine_run.*must be a patch run"):
        Predictor(lowres_run, device="cpu", overrides=[f"lowres.refine_run={lowres_run}"])


@torch.inference_mode()
def test_the_grid_is_predicted_mirrored_and_validated_unmirrored(monkeypatch):
    """Test-time mirroring of the whole grid: the softmax of the mean logits of the grid and its flips
    along each of ``infer.mirror_axes``, computed here by hand; validations while training run the
    network once."""
    torch.manual_seed(0)
    segmenter = build_segmenter(load_config(None, [*LOWRES, "data.class_names=[a,b,c]",
                                                   "infer.mirror_axes=[0,2]"])).eval()
    image = torch.randn(1, 32, 32, 16, generator=torch.Generator().manual_seed(1))
    network = segmenter.network
    mean = (network(image[None]) + network(image[None].flip(2)).flip(2) + network(image[None].flip(4)).flip(4)) / 3
    torch.testing.assert_close(segmenter.segment(image).probabilities, torch.softmax(mean[0], 0), atol=1e-5, rtol=0)
    unmirrored = torch.softmax(network(image[None])[0], 0)
    assert not torch.allclose(segmenter.segment(image).probabilities, unmirrored, atol=1e-3)
    calls = []
    forward = network.forward
    monkeypatch.setattr(network, "forward", lambda x: calls.append(x.shape) or forward(x))
    segmenter.validation_step({"image": image[None], "label": torch.zeros(1, 1, 32, 32, 16, dtype=torch.long)})
    assert len(calls) == 1 and segmenter.mirror_axes == [0, 2]
