import numpy as np
import torch

from medseg.resample import probabilities_to_grid


def _random_probabilities(shape, classes=3, seed=0):
    logits = torch.randn((classes, *shape), generator=torch.Generator().manual_seed(seed))
    return torch.softmax(logits, 0)


def test_identity_grid_returns_the_argmax():
    probs = _random_probabilities((7, 8, 9))
    labels, kept = probabilities_to_grid(probs.clone(), np.eye(4), np.eye(4), (7, 8, 9), keep_probabilities=True)
    np.testing.assert_array_equal(labels, probs.argmax(0).numpy())
    np.testing.assert_allclose(kept.astype(np.float32), probs.numpy(), atol=1e-3)


def test_flipped_and_permuted_grid():
    """Source grid = destination with axes 0 and 2 swapped and axis 1 reversed (an orientation change)."""
    probs = _random_probabilities((5, 6, 7))
    src_affine = np.eye(4)
    # destination index (i, j, k) -> source index (k, 5 - j, i)
    dst_to_src = np.array([[0, 0, 1, 0], [0, -1, 0, 5], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    dst_affine = src_affine @ dst_to_src
    labels, _ = probabilities_to_grid(probs.clone(), src_affine, dst_affine, (7, 6, 5))
    expected = probs.argmax(0).numpy().transpose(2, 1, 0)[:, ::-1, :]
    np.testing.assert_array_equal(labels, expected)


def test_outside_the_source_is_background_and_probabilities_sum_to_one():
    probs = torch.zeros((2, 4, 4, 4))
    probs[1] = 1.0  # everything foreground inside the source grid
    dst_affine = np.eye(4)
    dst_affine[:3, 3] = -2.0  # destination starts two voxels before the source on every axis
    labels, kept = probabilities_to_grid(probs, np.eye(4), dst_affine, (8, 8, 8), keep_probabilities=True)
    assert labels[2:6, 2:6, 2:6].all() and labels.sum() == 64
    np.testing.assert_allclose(kept.astype(np.float32).sum(0), 1.0, atol=1e-3)


def test_upsampling_by_two_interpolates_and_slabs_agree():
    probs = _random_probabilities((6, 6, 6), classes=4, seed=1)
    src_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    one, _ = probabilities_to_grid(probs.clone(), src_affine, np.eye(4), (11, 11, 11))
    sliced, _ = probabilities_to_grid(probs.clone(), src_affine, np.eye(4), (11, 11, 11), max_slab_voxels=11 * 11)
    np.testing.assert_array_equal(one, sliced)
    np.testing.assert_array_equal(one[::2, ::2, ::2], probs.argmax(0).numpy())


def test_separable_path_matches_grid_sample_for_axis_aligned_maps():
    from medseg.resample import _axis_permutation, _grid_sample_slabs, _separable_slabs

    probs = _random_probabilities((9, 7, 8), classes=3, seed=2)
    # destination -> source: permute axes (2, 0, 1), flip one, scale by 0.45-0.8, shift partly outside
    mapping = np.array([[0, 0.6, 0, 0.3], [0, 0, -0.45, 6.2], [0.8, 0, 0, -1.5], [0, 0, 0, 1]])
    order = _axis_permutation(mapping[:3, :3])
    assert order == [1, 2, 0]
    shape = (12, 14, 15)
    fast = torch.cat([s for _, s in _separable_slabs(probs, mapping, order, shape, slab=5)], dim=1)
    slow = torch.cat([s for _, s in _grid_sample_slabs(probs, mapping, shape, slab=5)], dim=1)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert _axis_permutation(np.array([[0.9, 0.1, 0], [-0.1, 0.9, 0], [0, 0, 1.0]])) is None
