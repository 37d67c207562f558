"""Synthetic CT-like phantoms, so the demo and the test suite can train and evaluate without real data.

Each case is an abdomen-like slab: air around an elliptical body with skin, a subcutaneous fat layer
and soft tissue, a liver-like blob, an enhancing aorta, two kidneys in perirenal fat and a vertebral
column. Anatomy is defined in millimetres around the centre of the field of view and drawn at the case's
own spacing, so cases look alike whatever their voxel grid, as scans from different scanners do. A
smooth random warp, random sizes, positions and rotations, a slight blur and Gaussian noise keep the task
from being solvable by thresholding alone while a small 3D UNet still learns it in minutes on a CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.errors import MedsegError
from medseg.io import atomic_output, write_volume

PHANTOM_CLASSES: dict[int, str] = {0: "background", 1: "liver", 2: "kidney", 3: "spine"}

_AIR_HU = -1000.0
_FOV_XY_MM = (100.0, 120.0)
_FOV_Z_MM = (100.0, 125.0)
_INPLANE_SPACING_MM = (0.8, 1.6)
_SLICE_SPACING_MM = (1.5, 3.0)
# With at most 125 mm / 1.5 mm = 84 slices this keeps every drawn case below 1.4 M voxels.
_MAX_INPLANE_VOXELS = 128
# Bound on the anatomy warp; the body (at most 43 + 2 mm from the centre) plus this stays inside the
# narrowest field of view (128 * 0.8 mm / 2 = 51.2 mm).
_WARP_PEAK_MM = 4.0


class _SmoothField:
    """Sum of a few separable low-frequency cosine modes over millimetre coordinates.

    Separability makes any axis-aligned block cheap to evaluate (one 3D multiply-add per mode), and
    ``|field| <= peak`` everywhere, which is what keeps warped anatomy inside the field of view.
    """

    def __init__(self, rng: np.random.Generator, peak: float, wavelength_mm: tuple[float, float], modes: int = 4):
        self._amplitude = peak / modes * rng.uniform(0.5, 1.0, modes) * rng.choice([-1.0, 1.0], modes)
        self._wavenumber = 2.0 * np.pi / rng.uniform(*wavelength_mm, (modes, 3))
        self._phase = rng.uniform(0.0, 2.0 * np.pi, (modes, 3))

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.zeros((x.size, y.size, z.size), np.float32)
        for amplitude, k, phase in zip(self._amplitude, self._wavenumber, self._phase):
            fx = (amplitude * np.cos(k[0] * x + phase[0])).astype(np.float32)
            fy = np.cos(k[1] * y + phase[1]).astype(np.float32)
            fz = np.cos(k[2] * z + phase[2]).astype(np.float32)
            out += np.outer(fx, fy)[:, :, None] * fz
        return out


class _Scene:
    """Millimetre coordinates of the voxel centres (origin at the centre of the field of view) and the
    smooth warp shared by every structure, so organs keep their relative layout while changing shape."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.axes = [((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)]
        self._warp = [_SmoothField(rng, _WARP_PEAK_MM, (60.0, 200.0)) for _ in range(3)]

    def block(self, center: np.ndarray | tuple[float, ...], reach: tuple[float, ...]) -> tuple[slice, slice, slice]:
        """Voxel slices covering ``center +- reach`` (mm, plus the warp bound) per axis, clipped to the array."""
        x, y, z = (
            slice(int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi, "right")))
            for a, c, r in zip(self.axes, center, reach)
            for lo, hi in [(c - r - _WARP_PEAK_MM, c + r + _WARP_PEAK_MM)]
        )
        return x, y, z

    def coords(self, block: tuple[slice, slice, slice], axes: tuple[int, ...] = (0, 1, 2)) -> list[np.ndarray]:
        """Warped coordinates (mm) of the voxels in ``block``, for the requested axes only."""
        sub = [a[s] for a, s in zip(self.axes, block)]
        out = []
        for axis in axes:
            coord = self._warp[axis](*sub)
            coord += sub[axis].reshape([-1 if i == axis else 1 for i in range(3)])
            out.append(coord)
        return out


def _rotation(degrees: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation matrix from angles about x, y and z (applied in that order); columns are the new axes."""
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _ellipsoid(coords: list[np.ndarray], center: np.ndarray, radii: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Squared normalised radius of a rotated ellipsoid at each voxel: below 1 inside."""
    scaled = rotation / radii  # column j: axis j of the ellipsoid divided by its radius
    offsets = [c - float(o) for c, o in zip(coords, center)]
    q = np.zeros_like(offsets[0])
    for j in range(3):
        u = offsets[0] * float(scaled[0, j])
        u += offsets[1] * float(scaled[1, j])
        u += offsets[2] * float(scaled[2, j])
        q += u * u
    return q


def _tube(
    scene: _Scene, center: np.ndarray, radii: np.ndarray, tilt: np.ndarray, margin: float = 1.0
) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray]:
    """Elliptic cylinder along z whose axis drifts by ``tilt`` mm per mm of z.

    Returns the block covering it out to ``margin`` times its radii, the normalised radius there (below 1
    inside) and the warped z coordinates, which structures along the tube (vertebrae) need.
    """
    z_reach = float(np.abs(scene.axes[2]).max())
    block = scene.block((*center, 0.0), (*(margin * radii + np.abs(tilt) * z_reach), z_reach))
    x, y, z = scene.coords(block)
    x -= z * float(tilt[0]) + float(center[0])
    x *= 1 / float(radii[0])
    y -= z * float(tilt[1]) + float(center[1])
    y *= 1 / float(radii[1])
    return block, np.sqrt(x * x + y * y), z


def _geometry(
    rng: np.random.Generator, shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Fill in whichever of shape and spacing is missing so the field of view stays about 100-125 mm."""
    for name, value in (("shape", shape), ("spacing", spacing)):
        if value is not None and (len(value) != 3 or min(value) <= 0):
            raise ValueError(f"phantom {name} must be three positive numbers, got {value}")
    fov = np.array([rng.uniform(*_FOV_XY_MM)] * 2 + [rng.uniform(*_FOV_Z_MM)])
    if spacing is None:
        if shape is None:
            inplane = rng.uniform(*_INPLANE_SPACING_MM)
            spacing = (inplane, inplane, rng.uniform(*_SLICE_SPACING_MM))
            fov[:2] = np.minimum(fov[:2], _MAX_INPLANE_VOXELS * inplane)
        else:
            spacing = tuple(fov / np.asarray(shape))
    if shape is None:
        shape = tuple(max(1, round(f / s)) for f, s in zip(fov, spacing))
    nx, ny, nz = (int(n) for n in shape)
    sx, sy, sz = (float(s) for s in spacing)
    return (nx, ny, nz), (sx, sy, sz)


@dataclass(frozen=True)
class _Hounsfield:
    """Tissue intensities (HU) of one case, varied between cases as contrast timing and scanners vary them."""

    soft: float
    fat: float
    liver: float
    kidney: float
    cancellous: float
    cortical: float
    disc: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Hounsfield:
        """Draw all intensities together, in one fixed order, so each case's random stream stays reproducible."""
        soft, fat = rng.uniform(30, 42), rng.uniform(-115, -85)
        liver, kidney = rng.uniform(60, 75), rng.uniform(150, 185)
        cancellous, cortical, disc = rng.uniform(350, 450), rng.uniform(750, 900), rng.uniform(70, 100)
        return cls(soft, fat, liver, kidney, cancellous, cortical, disc)


@dataclass
class _Canvas:
    """The case being drawn: its scene, and the image and label every structure paints into in turn."""

    scene: _Scene
    image: np.ndarray
    label: np.ndarray


@dataclass
class _Body:
    """The trunk outline, kept because the organs are placed relative to it and clipped to its interior."""

    radius_x: float  # semi-axes of the elliptic outline (mm)
    radius_y: float
    center_x: float
    center_y: float
    inside: np.ndarray  # inside the skin
    interior: np.ndarray  # inside the subcutaneous fat: the only place organs may occupy


@dataclass
class _SpineAxis:
    """Position and cross-section of the vertebral column, drawn before the organs that sit beside it."""

    center: np.ndarray  # (x, y) in mm
    radii: np.ndarray  # (x, y) in mm


def _affine(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Axis-aligned RAS affine whose origin is shifted at random, as scanners place the field of view differently."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = rng.uniform(-40, 40, 3) - (np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return affine


def _add_body(rng: np.random.Generator, canvas: _Canvas, hu: _Hounsfield) -> _Body:
    """Elliptic cylinder of soft tissue with a subcutaneous fat layer under the skin.

    Layers are placed by approximate depth under the skin in millimetres, so skin and fat keep their
    thickness whatever the body's size and the voxel spacing.
    """
    a, b = rng.uniform(38, 43), rng.uniform(28, 34)
    cx, cy = rng.uniform(-2, 2, 2).tolist()
    skin, fat = rng.uniform(1.0, 2.0), rng.uniform(2.0, 4.0)
    whole = (slice(None),) * 3
    x, y = canvas.scene.coords(whole, axes=(0, 1))
    x -= cx
    x *= 1 / a
    y -= cy
    y *= 1 / b
    depth = np.sqrt(x * x + y * y)  # normalised radius, turned into approximate depth under the skin (mm)
    depth -= 1
    depth *= -np.sqrt(a * b)
    inside = depth > 0
    interior = depth > skin + fat
    canvas.image[inside] = hu.soft
    canvas.image[inside & (depth > skin) & ~interior] = hu.fat
    return _Body(a, b, cx, cy, inside, interior)


def _add_liver(rng: np.random.Generator, canvas: _Canvas, body: _Body, hu: _Hounsfield) -> None:
    """Union of a large right-sided ellipsoid, a left lobe crossing the midline and a random lump.

    Three rotated ellipsoids give the liver an irregular outline that differs from case to case, so its
    shape has to be learnt rather than matched to a template.
    """
    a, b, cx, cy = body.radius_x, body.radius_y, body.center_x, body.center_y
    main_c = np.array([cx + rng.uniform(0.25, 0.35) * a, cy + rng.uniform(-0.05, 0.2) * b, rng.uniform(8, 22)])
    main_r = np.array([rng.uniform(0.45, 0.55) * a, rng.uniform(0.55, 0.7) * b, rng.uniform(24, 32)])
    left_c = main_c + [-rng.uniform(0.45, 0.6) * a, rng.uniform(0.15, 0.3) * b, rng.uniform(0, 10)]
    left_r = np.array([0.3 * a, 0.35 * b, 15.0]) * rng.uniform(0.8, 1.2, 3)
    lump_c, lump_r = main_c + rng.uniform(-8, 8, 3), main_r * rng.uniform(0.6, 0.8, 3)
    scene = canvas.scene
    for center, radii in ((main_c, main_r), (left_c, left_r), (lump_c, lump_r)):
        block = scene.block(center, (radii.max(),) * 3)
        q = _ellipsoid(scene.coords(block), center, radii, _rotation(rng.uniform(-12, 12, 3)))
        inside = (q < 1) & body.interior[block]
        canvas.image[block][inside] = hu.liver
        canvas.label[block][inside] = 1


def _place_spine(rng: np.random.Generator, body: _Body) -> _SpineAxis:
    """Spine near the back of the body; placed on its own because the aorta and the kidneys are set beside it."""
    radii = np.array([rng.uniform(8, 10), rng.uniform(7, 9)])
    center = np.array(
        [body.center_x + rng.uniform(-2, 2), body.center_y - body.radius_y + radii[1] + rng.uniform(6, 9)]
    )
    return _SpineAxis(center, radii)


def _add_aorta(rng: np.random.Generator, canvas: _Canvas, body: _Body, spine: _SpineAxis) -> None:
    """Tube left-anterior of the spine, enhancing like the kidneys but labelled background.

    A bright structure that is not kidney means kidneys cannot be found by thresholding alone.
    """
    aorta_r = rng.uniform(4.0, 5.5)
    aorta_c = spine.center + [-rng.uniform(2, 5), spine.radii[1] + aorta_r + rng.uniform(1, 3)]
    block, rho, _ = _tube(canvas.scene, aorta_c, np.array([aorta_r, aorta_r]), rng.uniform(-0.05, 0.05, 2))
    inside = (rho < 1) & body.interior[block]
    canvas.image[block][inside] = rng.uniform(150, 200)
    canvas.label[block][inside] = 0


def _add_kidney(
    rng: np.random.Generator, canvas: _Canvas, body: _Body, spine: _SpineAxis, hu: _Hounsfield, side: float
) -> None:
    """One kidney on ``side`` (-1: patient's left, +1: right, which sits lower) of the spine.

    A rotated ellipsoid with a medial notch (renal sinus fat), wrapped in perirenal fat: the fat capsule
    gives the kidney the contrast edge it has on real CT, and the notch its bean shape.
    """
    radii = np.array([rng.uniform(7, 9), rng.uniform(6, 7.5), rng.uniform(13, 17)])
    center = np.array(
        [
            spine.center[0] + side * (spine.radii[0] + radii[0] + rng.uniform(2, 5)),
            body.center_y + rng.uniform(-9, -5),
            rng.uniform(-30, -12) - (side > 0) * rng.uniform(0, 6),
        ]
    )
    rotation = _rotation((rng.uniform(-8, 8), rng.uniform(-8, 8), side * rng.uniform(10, 25)))
    block = canvas.scene.block(center, (1.4 * radii.max(),) * 3)
    coords = canvas.scene.coords(block)
    q = _ellipsoid(coords, center, radii, rotation)
    sinus_c = center + rotation[:, 0] * (-side * 0.9 * radii[0])
    sinus = _ellipsoid(coords, sinus_c, radii * [0.45, 0.45, 0.4], rotation) < 1
    capsule = (q < 1.35**2) & body.interior[block]
    kidney = (q < 1) & ~sinus & capsule
    canvas.image[block][capsule] = hu.fat
    canvas.label[block][capsule] = 0
    canvas.image[block][kidney] = hu.kidney
    canvas.label[block][kidney] = 2


def _add_spine(rng: np.random.Generator, canvas: _Canvas, body: _Body, spine: _SpineAxis, hu: _Hounsfield) -> None:
    """Slightly tilted column of vertebral bodies (bright cortex and endplates) separated by discs (background).

    A band of soft tissue around it first pushes back any liver, as paraspinal muscle does, so the liver
    never touches bone.
    """
    period, disc, phase = rng.uniform(22, 28), rng.uniform(4, 6), rng.uniform(0, 28)
    block, rho, z = _tube(canvas.scene, spine.center, spine.radii, rng.uniform(-0.06, 0.06, 2), margin=1.3)
    image, label = canvas.image[block], canvas.label[block]
    paraspinal = (rho < 1.3) & (label == 1)
    image[paraspinal] = hu.soft
    label[paraspinal] = 0
    inside = (rho < 1) & body.interior[block]
    level = np.mod(z - phase, period)  # position within one disc + vertebra unit, disc first
    is_disc = level < disc
    endplate = np.minimum(level - disc, period - level) < 1.0
    rim = np.clip((rho - 0.7) / 0.25, 0, 1)
    rim[endplate] = 1
    bone = inside & ~is_disc
    image[inside & is_disc] = hu.disc
    image[bone] = hu.cancellous + (hu.cortical - hu.cancellous) * rim[bone]
    label[bone] = 3


def _add_texture(rng: np.random.Generator, canvas: _Canvas, body: _Body) -> None:
    """Smooth intensity variation inside the body, as real tissue is not uniform: no single HU value marks an organ."""
    texture = _SmoothField(rng, rng.uniform(6, 10), (15.0, 60.0))(*canvas.scene.axes)
    np.add(canvas.image, texture, out=canvas.image, where=body.inside)


def _blur_and_noise(rng: np.random.Generator, image: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Scanner blur (a width in mm, so alike at any spacing) then Gaussian noise, as a CT reconstruction shows.

    The noise is drawn last because its number of draws depends on the shape.
    """
    blur_mm, noise_hu = rng.uniform(0.5, 0.9), np.float32(rng.uniform(10, 25))
    image = ndimage.gaussian_filter(image, blur_mm / np.asarray(spacing), truncate=3.0)
    image += rng.standard_normal(image.shape, dtype=np.float32) * noise_hu
    return image


def make_phantom_case(
    rng: np.random.Generator,
    shape: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic CT case: (image float32 in HU, label uint8, 4x4 float64 RAS affine).

    Without ``shape`` and ``spacing`` both are drawn (in-plane 0.8-1.6 mm, slices 1.5-3.0 mm) so the
    voxel grid varies between cases as it does between real scans; with only one given, the other is
    chosen to cover the usual field of view. Arrays are in (x, y, z) order like nibabel's.
    """
    shape, spacing = _geometry(rng, shape, spacing)
    # The steps below run in the order of their random draws, which fixes every case for a given generator
    # state: reordering them changes all cases. Everything random is drawn before the noise, whose draw
    # count depends on the shape, so the same generator state gives the same anatomy and position at any
    # spacing. Structures overwrite those painted before them.
    affine = _affine(rng, shape, spacing)
    canvas = _Canvas(_Scene(rng, shape, spacing), np.full(shape, _AIR_HU, np.float32), np.zeros(shape, np.uint8))
    hu = _Hounsfield.draw(rng)
    body = _add_body(rng, canvas, hu)
    _add_liver(rng, canvas, body, hu)
    spine = _place_spine(rng, body)
    _add_aorta(rng, canvas, body, spine)
    for side in (-1.0, 1.0):  # RAS: -x is the patient's left, +x the right
        _add_kidney(rng, canvas, body, spine, hu, side)
    _add_spine(rng, canvas, body, spine, hu)
    _add_texture(rng, canvas, body)
    return _blur_and_noise(rng, canvas.image, spacing), canvas.label, affine


def generate_phantom_dataset(
    output_dir: str | Path, num_cases: int = 24, seed: int = 0, shape: tuple[int, int, int] | None = None
) -> Path:
    """Write ``num_cases`` phantoms in the nnU-Net v2 raw layout (imagesTr, labelsTr, dataset.json).

    Case ``i`` depends only on ``seed`` and ``i``, so a smaller dataset is a prefix of a larger one.
    Images are stored as int16 HU like real CT. Every file is written atomically and dataset.json last,
    so a dataset.json means every case is complete. A folder that already holds anything is refused,
    so nothing a user put there is replaced.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be at least 1, got {num_cases}")
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise MedsegError(f"{output_dir}: folder is not empty; phantoms are written to a new or empty folder")
    images_dir, labels_dir = output_dir / "imagesTr", output_dir / "labelsTr"
    for index, case_rng in enumerate(np.random.default_rng(seed).spawn(num_cases)):
        image, label, affine = make_phantom_case(case_rng, shape)
        name = f"phantom_{index:03d}"
        write_volume(images_dir / f"{name}_0000.nii.gz", np.rint(image).astype(np.int16), affine)
        write_volume(labels_dir / f"{name}.nii.gz", label, affine)
    dataset = {
        "name": "phantom",
        "description": "Synthetic CT-like abdomen phantoms (liver, kidneys, spine) generated by medseg",
        "channel_names": {"0": "CT"},
        "labels": {name: index for index, name in PHANTOM_CLASSES.items()},
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
    }
    with atomic_output(output_dir / "dataset.json") as tmp:
        tmp.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return output_dir
