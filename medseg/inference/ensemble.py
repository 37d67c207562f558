"""Several trained runs as one model: the mean of their class probabilities on each input's own grid,
then the argmax, slab by slab like a single model's prediction.

Runs that preprocess alike (the folds of one cross-validation always do) are run on one preprocessed
image and averaged on its grid, so memory holds one probability volume per distinct preprocessing, not
one per model. Patch models that also tile alike average their logits window by window, as nnU-Net v2
averages its folds, and keep one sliding-window buffer between them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medseg.config import config_to_dict
from medseg.data.datasets import list_inputs
from medseg.errors import MedsegError
from medseg.inference.batch import BatchReport, predict_batch
from medseg.inference.predictor import (
    CasePrediction,
    Predictor,
    PreparedCase,
    StageClock,
    original_grid,
    without_voxels,
)
from medseg.io import Volume, read_volume
from medseg.resample import average_to_grid
from medseg.strategies.patch import PatchSegmenter, segment_together

FOLD_PREFIX = "fold_"


def fold_run_dirs(parent: Path) -> list[Path]:
    """The ``fold_<k>`` folders of a cross-validation parent, in fold order."""
    folds = [p for p in parent.glob(f"{FOLD_PREFIX}*") if p.is_dir() and p.name.removeprefix(FOLD_PREFIX).isdigit()]
    return sorted(folds, key=lambda p: int(p.name.removeprefix(FOLD_PREFIX)))


def expand_models(paths: list[str | Path]) -> list[Path]:
    """Run folders from ``--model`` arguments: a run folder as it is, a cross-validation parent as its
    ``fold_<k>`` run folders (in fold order)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        folds = fold_run_dirs(path)
        if not (path / "config.yaml").is_file() and folds:
            runs += folds
        else:
            runs.append(path)
    if len(set(r.resolve() for r in runs)) != len(runs):
        raise MedsegError(f"--model: the same run is given twice ({', '.join(map(str, runs))})")
    return runs


def _preprocessing_key(predictor: Predictor) -> str:
    """Runs with equal keys preprocess every scan identically (data section, strategy and its section)."""
    config = config_to_dict(predictor.config)
    strategy = config["model"]["strategy"]
    return json.dumps([config["data"], strategy, config.get(strategy)], sort_keys=True, default=str)


def _group_probabilities(group: list[Predictor], image: torch.Tensor) -> torch.Tensor:
    """A group's probabilities for one preprocessed image: from its mean window logits where every
    member is a patch model and they tile alike (folds do), the mean of their probabilities otherwise."""
    segmenters = [member.segmenter for member in group]
    patch_models = [s for s in segmenters if isinstance(s, PatchSegmenter)]
    if len(patch_models) == len(segmenters) and len({s.window_settings() for s in patch_models}) == 1:
        return segment_together(patch_models, image)
    total = None
    for segmenter in segmenters:
        probabilities = segmenter.segment(image).probabilities
        total = probabilities if total is None else total.add_(probabilities)
    assert total is not None
    return total.div_(len(segmenters))


class Ensemble:
    """The mean of several runs' probabilities; the same interface as a Predictor for batches."""

    def __init__(self, run_dirs: list[Path], device: str = "auto", checkpoint: str = "best.pt",
                 overrides: list[str] | None = None) -> None:
        if not run_dirs:
            raise MedsegError("--model: no run folder given")
        self.members = [Predictor(run, device=device, checkpoint=checkpoint, overrides=overrides) for run in run_dirs]
        first = self.members[0]
        for run, member in zip(run_dirs, self.members):
            if member.class_names != first.class_names:
                raise MedsegError(f"{run}: classes {', '.join(member.class_names)} differ from {run_dirs[0]}'s "
                                  f"({', '.join(first.class_names)}); an ensemble needs the same classes")
            if member.refiner is not None:
                raise MedsegError(f"{run}: a cascade (lowres.refine_run) cannot be part of an ensemble")
        groups: dict[str, list[Predictor]] = {}
        for member in self.members:
            groups.setdefault(_preprocessing_key(member), []).append(member)
        self.groups = list(groups.values())
        parents = {run.resolve().parent.name for run in run_dirs}
        # Folds of one parent are named after it; other ensembles after their members.
        self.name = (f"{parents.pop()} ({len(run_dirs)} folds)" if len(parents) == 1 and len(run_dirs) > 1
                     else "ensemble " + "+".join(m.name for m in self.members))

    @property
    def class_names(self) -> list[str]:
        return self.members[0].class_names

    def prepare(self, source: str | Path) -> PreparedCase:
        """Read a scan (each group preprocesses it its own way when it is predicted)."""
        seconds: dict[str, float] = {}
        clock = StageClock(seconds)
        volume = read_volume(source)
        clock.lap("read")
        return PreparedCase(volume, None, seconds)

    @torch.inference_mode()
    def predict_file(self, source: str | Path | Volume | PreparedCase, keep_probabilities: bool = False,
                     with_entropy: bool = False) -> CasePrediction:
        """Read a scan once (or take one already read); each group of runs preprocesses it once and sums
        its members' probabilities."""
        if isinstance(source, Volume):
            source = PreparedCase(source, None, {})
        elif not isinstance(source, PreparedCase):
            source = self.prepare(source)
        volume = source.volume
        seconds = dict(source.seconds)
        clock = StageClock(seconds)
        sources = []
        for number, group in enumerate(self.groups, start=1):
            image = group[0].preprocess({"image": volume})["image"]
            if number == len(self.groups):  # the last preprocessing: drop the voxels (ours and the batch's)
                volume = source.volume = without_voxels(volume)
            affine, shape = original_grid(image)
            clock.lap("preprocess")
            probabilities = _group_probabilities(group, image.as_tensor())
            sources.append((probabilities, image.affine.numpy(), len(group)))
            del image
            clock.lap("network")
        result = average_to_grid(sources, affine, shape, keep_probabilities, with_entropy)
        clock.lap("resample")
        return CasePrediction(result.labels, affine, volume.header, result.probabilities, result.entropy, seconds)

    def predict_paths(self, inputs: str | Path, output_dir: str | Path, **options: Any) -> BatchReport:
        """Predict an image file, a DICOM folder or a folder of images (see ``predict_batch``)."""
        return predict_batch(self, list_inputs(inputs), output_dir, **options)
