"""Synthetic phantom generator: determinism, anatomy in millimetres, CT intensities, nnU-Net layout."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.data.phantom import PHANTOM_CLASSES, generate_phantom_dataset, make_phantom_case
from medseg.errors import MedsegError

SMALL = (48, 48, 32)


@pytest.fixture(scope="module")
def default_cases() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [make_phantom_case(rng) for rng in np.random.default_rng(11).spawn(8)]


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.linalg.norm(affine[:3, :3], axis=0)


def _volumes_mm3(label: np.ndarray, affine: np.ndarray) -> dict[int, float]:
    return {k: float((label == k).sum() * np.prod(_spacing(affine))) for k in PHANTOM_CLASSES if k}


def _centroid_mm(label: np.ndarray, affine: np.ndarray, k: int) -> np.ndarray:
    ijk = np.argwhere(label == k).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


def test_same_seed_same_case_and_other_seed_differs():
    first = make_phantom_case(np.random.default_rng(3))
    again = make_phantom_case(np.random.default_rng(3))
    other = make_phantom_case(np.random.default_rng(4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert first[0].shape != other[0].shape or not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[2], other[2])


def test_output_types_and_affine(default_cases):
    for image, label, affine in default_cases:
        assert image.dtype == np.float32 and label.dtype == np.uint8 and affine.dtype == np.float64
        assert image.shape == label.shape and image.ndim == 3
        assert affine.shape == (4, 4)
        np.testing.assert_allclose(affine[:3, :3], np.diag(_spacing(affine)))  # axis-aligned RAS, positive steps
        np.testing.assert_array_equal(affine[3], [0, 0, 0, 1])
        assert set(np.unique(label)) <= set(PHANTOM_CLASSES)


def test_default_geometry_varies_within_bounds(default_cases):
    spacings = np.array([_spacing(affine) for _, _, affine in default_cases])
    shapes = {image.shape for image, _, _ in default_cases}
    assert len(shapes) > len(default_cases) // 2
    assert len({tuple(s) for s in spacings.round(6)}) == len(default_cases)
    assert np.all(spacings[:, 0] == spacings[:, 1])
    assert np.all((spacings[:, 0] >= 0.8) & (spacings[:, 0] <= 1.6))
    assert np.all((spacings[:, 2] >= 1.5) & (spacings[:, 2] <= 3.0))
    assert len({tuple(affine[:3, 3].round(3)) for _, _, affine in default_cases}) == len(default_cases)
    for (image, _, _), spacing in zip(default_cases, spacings):
        fov = np.array(image.shape) * spacing
        assert np.all((fov >= 95) & (fov <= 130)), fov
        assert image.size < 1_500_000


def test_every_class_present_with_physical_volume(default_cases):
    for _, label, affine in default_cases:
        volumes = _volumes_mm3(label, affine)
        assert 25_000 < volumes[1] < 100_000, volumes  # liver: the large organ
        assert 3_500 < volumes[2] < 12_000, volumes  # both kidneys together: small
        assert 10_000 < volumes[3] < 40_000, volumes  # spine
        spine_x = _centroid_mm(label, affine, 3)[0]
        assert _centroid_mm(label, affine, 1)[0] > spine_x  # liver on the patient's right (+x in RAS)
        kidney_x = affine[0, 0] * np.argwhere(label == 2)[:, 0] + affine[0, 3]
        assert 0.3 < np.mean(kidney_x > spine_x) < 0.7  # one kidney on each side of the spine


def test_anatomy_is_defined_in_millimetres():
    fine_image, fine, fine_affine = make_phantom_case(np.random.default_rng(5), spacing=(0.8, 0.8, 1.5))
    coarse_image, coarse, coarse_affine = make_phantom_case(np.random.default_rng(5), spacing=(1.6, 1.6, 3.0))
    assert fine_image.size > 6 * coarse_image.size
    fine_volumes, coarse_volumes = _volumes_mm3(fine, fine_affine), _volumes_mm3(coarse, coarse_affine)
    for k in fine_volumes:
        assert coarse_volumes[k] == pytest.approx(fine_volumes[k], rel=0.15)
        coarse_centroid, fine_centroid = _centroid_mm(coarse, coarse_affine, k), _centroid_mm(fine, fine_affine, k)
        np.testing.assert_allclose(coarse_centroid, fine_centroid, atol=3.0)  # within one coarse slice


def test_given_shape_is_kept_and_covers_the_body():
    image, label, affine = make_phantom_case(np.random.default_rng(2), shape=(40, 44, 30))
    assert image.shape == label.shape == (40, 44, 30)
    fov = np.array(image.shape) * _spacing(affine)
    assert np.all((fov >= 95) & (fov <= 130))
    assert set(np.unique(label)) == set(PHANTOM_CLASSES)


def test_intensities_are_ct_like(default_cases):
    for image, label, _ in default_cases:
        air = image[:4, :4, :]  # field-of-view corners lie outside the elliptical body
        assert abs(float(air.mean()) + 1000) < 5
        assert 8 < float(air.std()) < 30  # scanner noise, not a constant
        assert 50 < float(image[label == 1].mean()) < 85
        assert 100 < float(image[label == 2].mean()) < 200
        assert 350 < float(image[label == 3].mean()) < 950
        fat_like = (label == 0) & (image > -160) & (image < -40)
        assert fat_like.mean() > 0.02  # subcutaneous and perirenal fat
        liver_vs_body = image[label == 1].mean() - image[(label == 0) & (image > -40) & (image < 120)].mean()
        assert 5 < liver_vs_body < 55  # liver stands out from soft tissue, but only a little


def _read(path):
    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image


def test_dataset_layout_and_content(tmp_path):
    out = generate_phantom_dataset(tmp_path / "phantom", num_cases=3, seed=7, shape=SMALL)
    assert out == tmp_path / "phantom"
    names = [f"phantom_{i:03d}" for i in range(3)]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [f"{n}_0000.nii.gz" for n in names]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == [f"{n}.nii.gz" for n in names]
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "imagesTr", "labelsTr"]
    dataset = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset["channel_names"] == {"0": "CT"}
    assert dataset["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spine": 3}
    assert dataset["numTraining"] == 3 and dataset["file_ending"] == ".nii.gz" and dataset["name"] == "phantom"
    assert dataset["description"]
    spacings = set()
    for name in names:
        image, image_nii = _read(out / "imagesTr" / f"{name}_0000.nii.gz")
        label, label_nii = _read(out / "labelsTr" / f"{name}.nii.gz")
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.shape == label.shape == SMALL
        assert set(np.unique(label)) == set(PHANTOM_CLASSES)
        np.testing.assert_array_equal(image_nii.affine, label_nii.affine)
        for nii in (image_nii, label_nii):
            assert int(nii.header["qform_code"]) == 1 and int(nii.header["sform_code"]) == 1
            np.testing.assert_allclose(nii.header.get_qform(), nii.header.get_sform(), atol=1e-4)
        assert image.min() > -1200 and image.max() < 1100
        spacings.add(tuple(_spacing(image_nii.affine).round(4)))
    assert len(spacings) == 3


def test_dataset_is_deterministic_and_cases_do_not_depend_on_count(tmp_path):
    a = generate_phantom_dataset(tmp_path / "a", num_cases=2, seed=1, shape=SMALL)
    b = generate_phantom_dataset(tmp_path / "b", num_cases=3, seed=1, shape=SMALL)
    c = generate_phantom_dataset(tmp_path / "c", num_cases=2, seed=2, shape=SMALL)
    for name in ("imagesTr/phantom_000_0000.nii.gz", "imagesTr/phantom_001_0000.nii.gz", "labelsTr/phantom_001.nii.gz"):
        np.testing.assert_array_equal(_read(a / name)[0], _read(b / name)[0])
        np.testing.assert_array_equal(_read(a / name)[1].affine, _read(b / name)[1].affine)
        assert not np.array_equal(_read(a / name)[0], _read(c / name)[0])


def test_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(MedsegError, match="not empty"):
        generate_phantom_dataset(tmp_path, num_cases=1, seed=0, shape=SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_cases"):
        generate_phantom_dataset(tmp_path, num_cases=0)
    with pytest.raises(ValueError, match="shape"):
        make_phantom_case(np.random.default_rng(0), shape=(32, 32))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom_case(np.random.default_rng(0), spacing=(1.0, 1.0, 0.0))
