"""``probabilities_to_grid`` against SimpleITK's linear resampling as the oracle (the project rule: where we keep
our own code beside a library's, test it against the library), on both of its paths: the separable one for
axis-aligned maps (flips and permutations, as reorientation to RAS makes) and ``grid_sample`` for oblique ones.
Plus what SimpleITK cannot judge: our convention outside the source grid (background) and that slabs change
nothing.

Conventions: medseg affines are RAS and arrays are indexed (i, j, k); SimpleITK is LPS and
``GetArrayFromImage`` gives (k, j, i). The oracle images are built here from the affines directly (not with
``medseg.io``), so a shared mistake cannot hide.
"""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medseg.resample import (
    _axis_permutation,
    _grid_sample_slabs,
    _separable_slabs,
    average_to_grid,
    probabilities_to_grid,
)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
FLOAT16_TOLERANCE = 2e-3  # float16 keeps ~3 decimals: half a unit in the last place is 2.4e-4 just below 1


def _random_probabilities(shape, classes=3, seed=0):
    logits = 2 * torch.randn((classes, *shape), generator=torch.Generator().manual_seed(seed))
    return torch.softmax(logits, 0)


def _rotation(axis, degrees: float) -> np.ndarray:
    """Rodrigues' rotation about ``axis``."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * cross @ cross


def _affine(columns: np.ndarray, origin) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = origin
    return affine


def _set_geometry(image: sitk.Image, affine: np.ndarray) -> sitk.Image:
    """Spacing, direction and origin of a RAS affine whose columns are orthogonal, in SimpleITK's LPS."""
    lps = RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _sitk_linear(probabilities: torch.Tensor, src_affine, dst_affine, dst_shape) -> np.ndarray:
    """[K, *dst_shape] float64: each class channel resampled by ``sitk.Resample`` with ``sitkLinear``."""
    reference = _set_geometry(sitk.Image([int(n) for n in dst_shape], sitk.sitkFloat64), dst_affine)
    out = []
    for channel in probabilities.double().numpy():
        image = _set_geometry(sitk.GetImageFromArray(channel.transpose(2, 1, 0)), src_affine)
        resampled = sitk.Resample(image, reference, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                                  sitk.sitkFloat64)
        out.append(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0))
    return np.stack(out)


def _source_positions(src_affine, dst_affine, dst_shape) -> np.ndarray:
    """[3, *dst_shape]: the continuous source index each destination voxel samples."""
    mapping = np.linalg.inv(src_affine) @ dst_affine
    index = np.indices(dst_shape, dtype=np.float64).reshape(3, -1)
    return (mapping[:3, :3] @ index + mapping[:3, 3:]).reshape(3, *dst_shape)


def _check_against_sitk(probabilities, src_affine, dst_affine, dst_shape, max_slab_voxels=2**19):
    """Probabilities and labels agree with SimpleITK wherever the sample lies within the span of the source
    voxel centres, where both interpolate between voxels of the grid. In the one-voxel band outside it the
    conventions differ by design (we fade to the zero padding, so that background takes over; ITK holds the
    edge value up to half a voxel out, then gives the default value) and it is not compared; further out we
    give pure background (checked here), ITK gives the default value 0 to every class."""
    labels, kept = probabilities_to_grid(probabilities.clone(), src_affine, dst_affine, dst_shape,
                                         keep_probabilities=True, max_slab_voxels=max_slab_voxels)
    expected = _sitk_linear(probabilities, src_affine, dst_affine, dst_shape)
    positions = _source_positions(src_affine, dst_affine, dst_shape)
    size = np.asarray(probabilities.shape[1:], dtype=float).reshape(3, 1, 1, 1)
    inside = ((positions >= 0) & (positions <= size - 1)).all(0)
    outside = ((positions < -1) | (positions > size)).any(0)
    assert 0.4 < inside.mean() < 0.95 and outside.any()  # partly cropped, as real network grids are

    assert kept.dtype == np.float16 and kept.shape == (len(probabilities), *dst_shape)
    for k in range(len(probabilities)):
        np.testing.assert_allclose(kept[k][inside].astype(np.float64), expected[k][inside], atol=FLOAT16_TOLERANCE,
                                   err_msg=f"class {k}")
    agreement = (labels[inside] == expected.argmax(0)[inside]).mean()
    assert agreement >= 0.995, f"labels agree on {agreement:.2%} of the voxels"
    assert (labels[outside] == 0).all() and (kept[0][outside] == 1).all() and (kept[1:, outside] == 0).all()


@pytest.mark.parametrize("max_slab_voxels", [2**19, 3 * 18 * 12], ids=["one-slab", "slabs"])
def test_axis_aligned_anisotropic_flipped_permuted_matches_sitk(max_slab_voxels):
    """The original image is stored with permuted, flipped, anisotropic axes (i -> -A at 0.9 mm, j -> +S at
    1.1 mm, k -> -R at 2.5 mm); the network grid is RAS at (1.5, 1.2, 1.8) mm and crops part of it away.
    The map between them is a scaled permutation, so the separable path runs."""
    dst_affine = _affine(np.array([[0, 0, -2.5], [-0.9, 0, 0], [0, 1.1, 0]]), [60.0, 20.0, -30.0])
    src_affine = _affine(np.diag([1.5, 1.2, 1.8]), [33.5, 2.0, -29.0])
    dst_shape, src_shape = (20, 18, 12), (17, 16, 10)
    mapping = np.linalg.inv(src_affine) @ dst_affine
    assert _axis_permutation(mapping[:3, :3]) == [2, 0, 1]  # source x, y, z follow destination k, i, j
    _check_against_sitk(_random_probabilities(src_shape, classes=3, seed=3), src_affine, dst_affine, dst_shape,
                        max_slab_voxels)


def test_oblique_anisotropic_grid_matches_sitk():
    """The original image is rotated by 25 degrees about an oblique axis with anisotropic voxels
    (0.8, 1.3, 2.7 mm); the network grid is RAS at (1.4, 1.0, 1.6) mm. The map between them is not a
    permutation, so ``grid_sample`` runs."""
    dst_affine = _affine(_rotation([1.0, 2.0, 2.0], 25.0) @ np.diag([0.8, 1.3, 2.7]), [-40.0, 12.5, 7.0])
    dst_shape = (22, 16, 9)
    corners = np.array([dst_affine @ [i, j, k, 1] for i in (0, 21) for j in (0, 15) for k in (0, 8)])[:, :3]
    spacing = np.array([1.4, 1.0, 1.6])
    low, high = corners.min(0) + 3.0, corners.max(0) - 3.0  # crop 3 mm on every side
    src_affine = _affine(np.diag(spacing), low)
    src_shape = tuple(int(n) for n in np.floor((high - low) / spacing) + 1)
    mapping = np.linalg.inv(src_affine) @ dst_affine
    assert _axis_permutation(mapping[:3, :3]) is None
    _check_against_sitk(_random_probabilities(src_shape, classes=4, seed=4), src_affine, dst_affine, dst_shape)


def test_identity_grid_returns_the_argmax():
    probs = _random_probabilities((7, 8, 9))
    labels, kept = probabilities_to_grid(probs.clone(), np.eye(4), np.eye(4), (7, 8, 9), keep_probabilities=True)
    np.testing.assert_array_equal(labels, probs.argmax(0).numpy())
    np.testing.assert_allclose(kept.astype(np.float32), probs.numpy(), atol=1e-3)


def test_outside_the_source_is_background_and_probabilities_sum_to_one():
    """Destination voxels beyond the source grid (cropped-away air) are background, and in the band at the
    border, where probabilities fade to the padding, they still sum to one."""
    probs = torch.zeros((2, 4, 4, 4))
    probs[1] = 1.0  # everything foreground inside the source grid
    dst_affine = np.eye(4)
    dst_affine[:3, 3] = -2.0  # destination starts two voxels before the source on every axis
    labels, kept = probabilities_to_grid(probs, np.eye(4), dst_affine, (8, 8, 8), keep_probabilities=True)
    assert labels[2:6, 2:6, 2:6].all() and labels.sum() == 64
    np.testing.assert_allclose(kept.astype(np.float32).sum(0), 1.0, atol=1e-3)


def test_slabs_change_nothing():
    """The output is made slab by slab to bound memory; the slab size must not change the labels."""
    probs = _random_probabilities((6, 6, 6), classes=4, seed=1)
    src_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    one, _ = probabilities_to_grid(probs.clone(), src_affine, np.eye(4), (11, 11, 11))
    sliced, _ = probabilities_to_grid(probs.clone(), src_affine, np.eye(4), (11, 11, 11), max_slab_voxels=11 * 11)
    np.testing.assert_array_equal(one, sliced)
    np.testing.assert_array_equal(one[::2, ::2, ::2], probs.argmax(0).numpy())


@pytest.mark.parametrize("fill", [0.0, 2.0])
def test_separable_path_matches_grid_sample_including_the_border_band(fill):
    """Both paths pad (class 0 with ``fill``, the others with zeros), so unlike SimpleITK they must also
    agree in the band at the grid border."""
    probs = _random_probabilities((9, 7, 8), classes=3, seed=2)
    # destination -> source: permute axes (2, 0, 1), flip one, scale by 0.45-0.8, shift partly outside
    mapping = np.array([[0, 0.6, 0, 0.3], [0, 0, -0.45, 6.2], [0.8, 0, 0, -1.5], [0, 0, 0, 1]])
    order = _axis_permutation(mapping[:3, :3])
    assert order == [1, 2, 0]
    shape = (12, 14, 15)
    fast = torch.cat([s for _, s in _separable_slabs(probs, mapping, order, shape, 5, fill)], dim=1)
    slow = torch.cat([s for _, s in _grid_sample_slabs(probs, mapping, shape, 5, fill)], dim=1)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    assert _axis_permutation(np.array([[0.9, 0.1, 0], [-0.1, 0.9, 0], [0, 0, 1.0]])) is None


@pytest.mark.parametrize("mapping", [
    np.array([[0.4, 0, 0, -0.7], [0, 0.55, 0, 0.2], [0, 0, 0.8, -1.0], [0, 0, 0, 1]]),  # finer, partly outside
    np.array([[0, 0.6, 0, 0.3], [0, 0, -0.45, 6.2], [0.8, 0, 0, -1.5], [0, 0, 0, 1]]),  # permuted and flipped
])
def test_labels_alone_come_from_the_cells_that_change_and_equal_full_interpolation(mapping):
    """Labels without probabilities are interpolated only in cells whose corners disagree: the same
    labels as interpolating every class everywhere, the path kept for probabilities and the oracle."""
    coarse = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(5))
    smooth = torch.nn.functional.interpolate(coarse[None], size=(9, 7, 8), mode="trilinear")[0]
    probs = torch.softmax(3 * smooth, dim=0)  # regions of one label with boundaries between them
    src_affine = np.eye(4)
    dst_affine = mapping  # destination voxel -> source voxel, as the source's affine is the identity
    shape = (21, 17, 15)
    fast = average_to_grid([(probs, src_affine, 1)], dst_affine, shape)
    full = average_to_grid([(probs, src_affine, 1)], dst_affine, shape, keep_probabilities=True)
    assert len(np.unique(fast.labels)) >= 3 and (fast.labels == 0).any()
    np.testing.assert_array_equal(fast.labels, full.labels)
    half = average_to_grid([(probs.half(), src_affine, 1)], dst_affine, shape)
    assert (half.labels != full.labels).mean() < 0.01
