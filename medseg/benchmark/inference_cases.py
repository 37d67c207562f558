"""Inference cases for the benchmarks: run folders with random weights (speed does not depend on
them), large CTs resampled from ``ct_example``, medseg's prediction of one case and the MONAI
bundle-style script users write by hand, each meant to run in its own process so that its peak memory
is its own."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from medseg.config import Config, config_to_dict, load_config, save_config
from medseg.data.datasets import discover_dataset
from medseg.data.planning import plan
from medseg.engine.checkpoint import save_checkpoint
from medseg.strategies import build_segmenter

LARGE_CT_SHAPE = (512, 512, 280)
# The comparison script's settings: 1.5 x 1.5 x 2 mm, 96^3 windows, MONAI's default overlap.
LARGE_CT_OVERRIDES = ["data.spacing=[1.5,1.5,2.0]", "patch.patch_size=[96,96,96]", "infer.overlap=0.25",
                      "data.intensity_window=[-1000,1000]"]


def peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _planned_config(pipeline: str, data_root: Path, overrides: list[str]) -> Config:
    config = load_config(pipeline, [*overrides, f"data.root={data_root}"])
    dataset = discover_dataset(data_root)
    return plan(config, dataset, dataset.cases[:20])


def random_run(pipeline: str, data_root: Path, overrides: list[str], folder: Path, seed: int = 0) -> Path:
    """A run folder holding the pipeline's network with random weights."""
    config = _planned_config(pipeline, data_root, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    torch.manual_seed(seed)
    save_checkpoint(folder / "best.pt", {"config": config_to_dict(config),
                                         "model": build_segmenter(config).state_dict()})
    return folder


def make_large_ct(source: Path, target: Path, shape: tuple[int, int, int] = LARGE_CT_SHAPE) -> Path:
    """Resample a CT (linear) onto a ``shape`` grid covering the same field of view, int16."""
    image = sitk.ReadImage(str(source))
    size = image.GetSize()
    spacing = [sp * sz / n for sp, sz, n in zip(image.GetSpacing(), size, shape)]
    resampled = sitk.Resample(image, list(shape), sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                              image.GetDirection(), -1024.0, sitk.sitkInt16)
    sitk.WriteImage(resampled, str(target), useCompression=True)
    return target


def infer_one(run_dir: str, image: str, output: str) -> None:
    from medseg.inference import Predictor

    predictor = Predictor(run_dir, device="auto")
    start = time.perf_counter()
    predictor.predict_paths(image, output, overwrite=True, progress=False, log=lambda _: None)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_gb": peak_rss_gb()}))


def monai_reference(run_dir: str, image: str, output: str) -> None:
    """The bundle-style script users write by hand: full-resolution float copies and Invertd."""
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        Orientationd,
        SaveImaged,
        ScaleIntensityRanged,
        Spacingd,
    )

    from medseg.inference import Predictor

    predictor = Predictor(run_dir, device="auto")
    network, device = predictor.segmenter.network, predictor.device
    start = time.perf_counter()
    pre = Compose([LoadImaged("image", image_only=False), EnsureChannelFirstd("image"),
                   Orientationd("image", axcodes="RAS"), Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
                   ScaleIntensityRanged("image", a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True)])
    post = Compose([Activationsd("pred", softmax=True),
                    Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
                    AsDiscreted("pred", argmax=True),
                    SaveImaged("pred", output_dir=output, output_postfix="seg", separate_folder=False,
                               output_dtype=np.uint8, print_log=False)])
    data = pre({"image": image})
    inferer = SlidingWindowInferer(roi_size=(96, 96, 96), sw_batch_size=4, overlap=0.25, mode="gaussian")
    with torch.inference_mode():
        data["pred"] = inferer(data["image"][None].to(device), network)[0]
    post(data)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_gb": peak_rss_gb()}))
