"""The one bounding-box helper behind refinement, the cascade and metric cropping."""

import numpy as np
import torch

from medseg.regions import bounding_box


def test_box_grows_by_the_margin_but_never_beyond_the_volume():
    mask = torch.zeros((10, 12, 14), dtype=torch.bool)
    mask[0:2, 5:6, 12:14] = True
    assert bounding_box(mask, margin=3) == (slice(0, 5), slice(2, 9), slice(9, 14))
    assert bounding_box(torch.zeros((4, 4, 4), dtype=torch.bool), margin=2) is None
    assert bounding_box(torch.ones((4, 4, 4), dtype=torch.bool), margin=100) == (slice(0, 4),) * 3


def test_margin_per_axis_and_numpy_input_give_the_same_box_as_a_crop_by_hand():
    rng = np.random.default_rng(0)
    mask = np.zeros((20, 18, 16), dtype=bool)
    mask[tuple(rng.integers(4, 12, size=(3, 5)))] = True
    box = bounding_box(mask, margin=[1, 0, 4])
    found = np.argwhere(mask)
    low = np.maximum(found.min(0) - [1, 0, 4], 0)
    high = np.minimum(found.max(0) + [1, 0, 4] + 1, mask.shape)
    assert box == tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    assert mask[box].sum() == mask.sum()
    assert bounding_box(torch.from_numpy(mask), margin=[1, 0, 4]) == box  # tensors: the same box
