"""``medseg export``: a trained run's networks as TorchScript or ONNX, with a sidecar JSON that records
everything ``medseg infer`` does around them, so that a deployment preprocesses and post-processes
exactly as the run was validated: spacing, orientation, normalisation and window, the strategy's grid,
window size, overlap and blending, mirroring, fusion, and the class names.

``medseg infer --model EXPORT_DIR`` runs from the folder with no checkpoint (see ``exported.py``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from medseg import __version__
from medseg.config import Config, config_to_dict
from medseg.errors import MedsegError
from medseg.inference.exported import SIDECAR, SUFFIX
from medseg.inference.predictor import Predictor
from medseg.io import atomic_output

ONNX_OPSET = 17


def _summary(config: Config) -> dict[str, Any]:
    """The settings that decide a prediction, in plain words for a reader of the sidecar (the full
    resolved config is in it too, under ``config``)."""
    d, i, strategy = config.data, config.infer, config.model.strategy
    inference: dict[str, Any] = {"strategy": strategy, "mirror_axes": i.mirror_axes}
    if strategy == "patch":
        inference.update(window=config.patch.patch_size, overlap=i.overlap, blend=i.blend,
                         windows_per_batch=i.sw_batch_size)
    elif strategy == "lowres":
        inference.update(grid=config.lowres.grid_size, resize_back="trilinear probabilities")
    else:
        s = config.slice2d
        inference.update(axes=s.axes, window=s.patch_size, context_slices=s.context_slices, fusion=s.fusion,
                         overlap=i.overlap, blend=i.blend)
    return {
        "preprocessing": {
            "orientation": "RAS", "spacing_mm": d.spacing, "modality": d.modality, "normalization": d.normalization,
            "intensity_window": d.intensity_window, "intensity_mean": d.intensity_mean,
            "intensity_std": d.intensity_std, "crop_foreground": d.crop_foreground,
        },
        "inference": inference,
        "postprocessing": "softmax, class probabilities resampled (trilinear) to the input grid, argmax",
    }


def write_network(network: torch.nn.Module, shape: tuple[int, ...], path: Path, fmt: str) -> None:
    """One network traced on an input of ``shape`` (the batch axis stays free in ONNX), written atomically."""
    example = torch.randn(shape)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values in MONAI's shape checks
        if fmt == "torchscript":
            torch.jit.trace(network, example, check_trace=False).save(str(tmp))
        else:
            torch.onnx.export(network, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=ONNX_OPSET, dynamo=False)


def export_run(run_dir: str | Path, output: str | Path, fmt: str, checkpoint: str = "best.pt") -> Path:
    """Write ``output/network_<i>.<pt|onnx>`` and ``output/medseg_export.json``; returns ``output``."""
    if fmt not in SUFFIX:
        raise MedsegError(f"--format: one of {', '.join(SUFFIX)}, got '{fmt}'")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MedsegError(f"{output}: exists and is not an empty folder; choose a new -o")
    predictor = Predictor(run_dir, device="cpu", checkpoint=checkpoint)
    if predictor.refiner is not None:
        raise MedsegError(f"{run_dir}: a cascade (lowres.refine_run) cannot be exported; export each run")
    networks = predictor.segmenter.exported_networks()
    entries = []
    for index, (network, shape) in enumerate(networks):
        name = f"network_{index}{SUFFIX[fmt]}"
        write_network(network.eval(), shape, output / name, fmt)
        entries.append({"file": name, "input_shape": ["batch", *shape[1:]], "output": "logits [batch, classes, ...]"})
    sidecar = {
        "format": fmt, "medseg_version": __version__, "torch_version": torch.__version__,
        "source_run": str(Path(run_dir).resolve()), "checkpoint": checkpoint,
        "class_names": predictor.class_names, "networks": entries, **_summary(predictor.config),
        "config": config_to_dict(predictor.config),
    }
    with atomic_output(output / SIDECAR) as tmp:
        tmp.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return output
