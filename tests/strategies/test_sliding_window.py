"""The slab-by-slab sliding window against MONAI's ``SlidingWindowInferer`` as the oracle: the same
windows, padding and blending, so the same probabilities, whatever the volume's shape."""

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from medseg.strategies.sliding_window import WindowSettings, sliding_window_probabilities, window_starts

CPU = torch.device("cpu")


def _network(seed: int, classes: int = 3) -> nn.Module:
    """Position-sensitive (padding, odd kernel), so misplaced windows would show."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, classes, 3, padding=1)).eval()


def _monai(image, network, roi, overlap, blend, batch):
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=batch, overlap=overlap, mode=blend)
    return torch.softmax(inferer(image[None], network)[0], dim=0)


@pytest.mark.parametrize("shape, roi, overlap, blend, batch", [
    ((1, 50, 23, 37), (16, 16, 16), 0.5, "gaussian", 4),   # longest axis first, its last window clamped
    ((1, 20, 31, 70), (16, 12, 20), 0.25, "gaussian", 3),  # longest axis last, anisotropic windows
    ((1, 9, 40, 13), (16, 16, 16), 0.5, "constant", 1),    # smaller than a window along two axes: padded
    ((1, 16, 16, 16), (16, 16, 16), 0.5, "gaussian", 2),   # exactly one window
])
@torch.inference_mode()
def test_one_model_gives_monais_probabilities(shape, roi, overlap, blend, batch):
    network = _network(0)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    settings = WindowSettings(roi, overlap, blend, batch, CPU)
    ours = sliding_window_probabilities(image, network, settings, CPU, dtype=torch.float32)
    torch.testing.assert_close(ours, _monai(image, network, roi, overlap, blend, batch), atol=2e-6, rtol=1e-5)


@torch.inference_mode()
def test_probabilities_are_stored_in_half_precision_by_default():
    network = _network(1)
    image = torch.randn(1, 44, 30, 26, generator=torch.Generator().manual_seed(2))
    settings = WindowSettings((16, 16, 16), 0.5, "gaussian", 4, CPU)
    ours = sliding_window_probabilities(image, network, settings, CPU)
    assert ours.dtype == torch.float16
    torch.testing.assert_close(ours.float(), _monai(image, network, (16, 16, 16), 0.5, "gaussian", 4),
                               atol=1e-3, rtol=0)


def test_window_starts_follow_monais_rule():
    assert window_starts(50, 16, 0.5) == [0, 8, 16, 24, 32, 34]
    assert window_starts(16, 16, 0.5) == [0]
    assert window_starts(17, 16, 0.0) == [0, 1]
