"""Predictor: a run folder -> predictions for new scans, written in each scan's own geometry."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Compose

from medseg.config import Config, config_from_dict
from medseg.data.datasets import list_inputs
from medseg.data.transforms import preprocessing
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import MedsegError
from medseg.inference.batch import BatchReport, predict_batch
from medseg.inference.exported import is_export, load_networks, read_sidecar
from medseg.io import Volume, read_volume
from medseg.regions import bounding_box
from medseg.resample import GridResult, average_to_grid
from medseg.strategies import STRATEGIES, build_segmenter


class StageClock:
    """Adds the seconds since the previous lap to ``seconds[stage]`` (nothing when ``seconds`` is None)."""

    def __init__(self, seconds: dict[str, float] | None) -> None:
        self.seconds = seconds
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        if self.seconds is not None:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


def without_voxels(volume: Volume) -> Volume:
    """The scan's grid and header without its voxels: once preprocessed, that is all the output needs,
    and a 512x512x1600 CT's voxels would otherwise stay in memory through the network pass."""
    return Volume(np.empty((0, 0, 0), dtype=volume.array.dtype), volume.affine, volume.header)


@dataclass
class PreparedCase:
    """A scan read, and preprocessed when its model can do that ahead (``image``, a MetaTensor), with
    the seconds each took."""

    volume: Volume
    image: Any
    seconds: dict[str, float]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MedsegError("--device cuda: no CUDA device is available on this machine")
    if name not in ("cpu", "cuda"):
        raise MedsegError(f"--device: expected auto, cpu or cuda, got '{name}'")
    return torch.device(name)


@dataclass
class CasePrediction:
    """Labels (uint8) on the input's own grid; probabilities [K, ...] float16 and the per-voxel entropy
    of the probabilities (float32, nats) when asked for."""

    labels: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None
    probabilities: np.ndarray | None = None
    entropy: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # read, preprocess, network, resample


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    if not run_dir.is_dir():
        raise MedsegError(f"{run_dir}: run folder not found")
    path = run_dir / checkpoint
    if not path.exists() and checkpoint == "best.pt":
        if not (run_dir / "last.pt").exists():
            raise MedsegError(
                f"{run_dir}: not a run folder (no best.pt or last.pt); give the folder 'medseg train' wrote"
            )
        path = run_dir / "last.pt"  # stopped before its first validation
    return path


def original_grid(image: Any) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The affine and shape of the scan a preprocessed image (a MONAI MetaTensor) came from."""
    d, h, w = (int(s) for s in image.meta["spatial_shape"])
    return image.meta["original_affine"].numpy(), (d, h, w)


class Predictor:
    """Loads a run folder's checkpoint (weights only) and the resolved config it was trained with, or an
    export folder's networks and sidecar (``medseg export``), and predicts alike from either."""

    def __init__(
        self, run_dir: str | Path, device: str = "auto", checkpoint: str = "best.pt", overrides: list[str] | None = None
    ) -> None:
        run_dir = Path(run_dir)
        self.name = run_dir.resolve().name  # names the model in DICOM outputs
        sidecar: dict[str, Any] | None = None
        state: dict[str, Any] | None = None
        if is_export(run_dir):
            sidecar = read_sidecar(run_dir)
            saved_config = sidecar["config"]
        else:
            state = load_checkpoint(_checkpoint_path(run_dir, checkpoint))
            saved_config = state["config"]
        saved = config_from_dict(saved_config)
        if saved.command != "train":
            raise MedsegError(
                f"{run_dir}: a 'medseg {saved.command}' run, not a segmentation model from 'medseg train'"
            )
        # Settings that change how a trained model predicts, not what it learned.
        allowed = ("infer.", *STRATEGIES.get(saved.model.strategy).inference_keys)
        for item in overrides or []:
            if not item.startswith(allowed):
                raise MedsegError(f"override '{item}': at inference only {', '.join(allowed)}* keys can change")
        self.config: Config = config_from_dict(saved_config, overrides)
        self.device = resolve_device(device)
        self.segmenter = build_segmenter(self.config)
        if sidecar is not None:  # an export: its networks, no checkpoint and no training state
            self.segmenter.use_exported(load_networks(run_dir, sidecar, self.device))
        else:
            assert state is not None
            self.segmenter.load_state_dict(state["model"])
        self.segmenter.to(self.device).eval()
        self.preprocess = Compose(preprocessing(self.config.data, with_label=False)
                                  + self.segmenter.grid_transforms(with_label=False))
        self.cascade = self.segmenter.cascade()
        self.refiner = self._refiner(device) if self.cascade else None

    def _refiner(self, device: str) -> Predictor:
        assert self.cascade is not None
        refiner = Predictor(self.cascade.run, device=device)
        if refiner.config.model.strategy != "patch" or refiner.class_names != self.class_names:
            raise MedsegError(f"config key '{self.cascade.key}': {self.cascade.run} must be a patch run with the same "
                              f"classes ({', '.join(self.class_names)})")
        return refiner

    @property
    def class_names(self) -> list[str]:
        return list(self.config.data.class_names or [])

    def prepare(self, source: str | Path) -> PreparedCase:
        """Read a scan and preprocess it as in training: the part of a case that can run ahead of the
        network (``predict_batch`` does it for the next case in a background thread)."""
        seconds: dict[str, float] = {}
        clock = StageClock(seconds)
        volume = read_volume(source)
        clock.lap("read")
        image = None
        if self.refiner is None:  # a cascade preprocesses twice, on the volume and on its crop
            image = self.preprocess({"image": volume})["image"]
            clock.lap("preprocess")
            volume = without_voxels(volume)
        return PreparedCase(volume, image, seconds)

    def predict_file(self, source: str | Path | Volume | PreparedCase, keep_probabilities: bool = False,
                     with_entropy: bool = False) -> CasePrediction:
        """Predict a scan (a file, one already read, or one prepared ahead) and keep its NIfTI header
        for the output; the prediction says how long each stage took."""
        if isinstance(source, Volume):
            source = PreparedCase(source, None, {})
        elif not isinstance(source, PreparedCase):
            source = self.prepare(source)
        seconds = dict(source.seconds)
        result, affine = self.predict_case(source.volume, keep_probabilities, with_entropy, seconds, source.image)
        return CasePrediction(result.labels, affine, source.volume.header, result.probabilities, result.entropy,
                              seconds)

    def predict_case(
        self, source: Path | Volume, keep_probabilities: bool = False, with_entropy: bool = False,
        seconds: dict[str, float] | None = None, image: Any = None,
    ) -> tuple[GridResult, np.ndarray]:
        """Preprocess as in training (unless ``image`` is ``source`` preprocessed already), segment, and
        resample class probabilities back to the grid of ``source`` (a file or an in-memory Volume):
        labels, optionally probabilities and their entropy, and that grid's affine. With a cascade the
        refining model predicts again inside the region found here. ``seconds`` receives the time of
        each stage."""
        if self.refiner is not None:
            if with_entropy:
                raise MedsegError("--save-uncertainty: not available for a cascade (lowres.refine_run)")
            if not isinstance(source, Volume):
                source = read_volume(source)  # read once: the cascade crops the same voxels again
        clock = StageClock(seconds)
        if image is None:
            image = self.preprocess({"image": source})["image"]
        grid_affine = image.affine.numpy()
        original_affine, original_shape = original_grid(image)
        clock.lap("preprocess")
        prediction = self.segmenter.segment(image.as_tensor())
        del image
        clock.lap("network")
        result = average_to_grid([(prediction.probabilities, grid_affine, 1)], original_affine, original_shape,
                                 keep_probabilities, with_entropy)
        clock.lap("resample")
        if self.refiner is not None:
            assert isinstance(source, Volume)
            result.labels, result.probabilities = self._refine(source, result.labels, result.probabilities,
                                                               original_affine, keep_probabilities)
        return result, original_affine

    def _refine(self, source: Volume, labels: np.ndarray, probabilities: np.ndarray | None, affine: np.ndarray,
                keep_probabilities: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Cascade: crop the input to the found region plus a margin and let the refining model decide."""
        assert self.refiner is not None and self.cascade is not None
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        box = bounding_box(labels > 0, np.ceil(self.cascade.margin_mm / spacing).astype(int))
        if box is None:
            return labels, probabilities
        low = np.array([b.start for b in box])
        crop_affine = affine.copy()
        crop_affine[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
        crop = Volume(np.ascontiguousarray(source.array[box]), crop_affine)
        inner, _ = self.refiner.predict_case(crop, keep_probabilities)
        inner_labels, inner_probabilities = inner.labels, inner.probabilities
        refined = np.zeros_like(labels)
        refined[box] = inner_labels
        if probabilities is not None:
            probabilities[:] = 0
            probabilities[0] = 1
            probabilities[(slice(None), *box)] = inner_probabilities
        return refined, probabilities

    def predict_paths(self, inputs: str | Path, output_dir: str | Path, **options: Any) -> BatchReport:
        """Predict an image file, a DICOM folder or a folder of images (see ``predict_batch``)."""
        return predict_batch(self, list_inputs(inputs), output_dir, **options)

    def predict_files(self, files: list[Path], output_dir: str | Path, **options: Any) -> BatchReport:
        """Predict each file into ``output_dir/<case>.nii.gz`` (see ``predict_batch``)."""
        return predict_batch(self, files, output_dir, **options)
