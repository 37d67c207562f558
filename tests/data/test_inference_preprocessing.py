"""Inference puts a scan on the network's grid in one slab-by-slab pass (``LoadResampledImaged``);
MONAI's ``Orientationd`` then ``Spacingd``, as training applies them, are the oracle: the same grid,
the same values, the same metadata the prediction is mapped back with."""

import numpy as np
import pytest
import torch
from monai.transforms import Compose, Orientationd, Spacingd

from medseg.config import load_config
from medseg.data.transforms import LoadResampledImaged, LoadVolumed, preprocessing
from medseg.io import Volume
from tests.helpers import TINY


def _scan(dtype, affine_diagonal, seed=0):
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1500, (41, 35, 23)).astype(dtype)
    affine = np.diag([*affine_diagonal, 1.0])
    affine[:3, 3] = [12.5, -30.0, 4.0]
    return Volume(array, affine)


def _monai(volume, orientation, spacing):
    """What training's ``preprocessing`` does to the image key."""
    steps = [LoadVolumed(["image"]), Orientationd(["image"], axcodes=orientation, labels=None)]
    if spacing:
        steps.append(Spacingd(["image"], pixdim=spacing, mode="bilinear", dtype=np.float32))
    return Compose(steps)({"image": volume})["image"]


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("orientation, diagonal, spacing", [
    ("RAS", (-0.7, -0.6, 1.2), [1.5, 1.5, 2.0]),  # flipped axes (LPS storage), coarser grid
    ("LPS", (0.9, 1.1, 3.0), [0.5, 0.8, 1.0]),    # finer grid: values between samples and border padding
    ("RAS", (1.0, 1.0, 1.0), None),               # no spacing: orientation alone, values unchanged
])
def test_one_pass_gives_monais_grid_and_values(dtype, orientation, diagonal, spacing):
    volume = _scan(dtype, diagonal)
    expected = _monai(volume, orientation, spacing)
    ours = LoadResampledImaged(["image"], orientation, spacing)({"image": volume})["image"]
    assert ours.shape == expected.shape and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.affine.numpy(), expected.affine.numpy(), atol=1e-6)
    scale = float(np.abs(volume.array).max())
    torch.testing.assert_close(ours.as_tensor(), expected.as_tensor(), atol=1e-5 * scale, rtol=0)
    for key in ("original_affine", "spatial_shape"):
        np.testing.assert_array_equal(np.asarray(ours.meta[key]), np.asarray(expected.meta[key]))


def test_a_scan_is_never_copied_whole_as_float():
    """The one-pass load keeps the stored dtype: only destination slabs are float32."""
    volume = _scan(np.int16, (-0.7, -0.6, 1.2))
    before = volume.array.copy()
    LoadResampledImaged(["image"], "RAS", [1.5, 1.5, 2.0])({"image": volume})
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, before)


def test_the_loaded_image_can_be_normalised_in_place():
    """Preprocessing after the load changes the image in place (MRI z-scoring): it must not come out
    as an inference-mode tensor, which refuses that outside inference mode."""
    image = LoadResampledImaged(["image"], "RAS", [1.5, 1.5, 2.0])({"image": _scan(np.int16, (1, 1, 1))})["image"]
    assert not image.is_inference()
    image.sub_(image.mean())


def test_inference_preprocessing_loads_in_one_pass_and_training_with_monai():
    data = load_config(None, [*TINY, "data.class_names=[a,b]", "data.spacing=[1,1,2]"]).data
    assert isinstance(preprocessing(data, with_label=False)[0], LoadResampledImaged)
    assert isinstance(preprocessing(data, with_label=True)[0], LoadVolumed)
