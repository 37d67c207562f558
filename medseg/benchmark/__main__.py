"""Speed and memory figures for the patch pipelines (a benchmark, not a test).

    python -m medseg.benchmark [--data ../shared/data] [--output benchmark_output]

Prints training samples/s for the hippocampus and OpenKBP pipelines, and inference seconds and peak
memory per case for both and for a large CT (``ct_example`` resampled to 512x512x280). The large CT is
also run through a MONAI bundle-style script (Spacingd, SlidingWindowInferer, Invertd, SaveImaged)
with the same network, for comparison. Each inference runs in its own process, so peak memory (max
RSS) is that case's alone. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from medseg.config import load_config, save_config
from medseg.data.datasets import discover_dataset
from medseg.data.planning import plan
from medseg.engine.checkpoint import save_checkpoint
from medseg.strategies import build_segmenter

LARGE_CT_SHAPE = (512, 512, 280)
# The comparison script's settings: 1.5 x 1.5 x 2 mm, 96^3 windows, MONAI's default overlap.
LARGE_CT_OVERRIDES = ["data.spacing=[1.5,1.5,2.0]", "patch.patch_size=[96,96,96]", "infer.overlap=0.25",
                      "data.intensity_window=[-1000,1000]"]


def _peak_rss_gb() -> float:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _planned(pipeline: str, data_root: Path, overrides: list[str]):
    config = load_config(pipeline, [*overrides, f"data.root={data_root}"])
    dataset = discover_dataset(data_root)
    return plan(config, dataset, dataset.cases[:20]), dataset


def training_throughput(pipeline: str, data_root: Path, iterations: int = 20) -> dict:
    """Patches per second over ``iterations`` optimiser steps after 3 warm-up steps (20 cases cached)."""
    from medseg.engine.trainer import build_optimizer
    from medseg.workflows.training import segmentation_loaders

    config, dataset = _planned(pipeline, data_root, ["train.progress=false"])
    segmenter = build_segmenter(config).train()
    loader, _ = segmentation_loaders(config, segmenter, dataset.cases[:20], dataset.cases[:1])
    optimizer = build_optimizer(config, segmenter.parameters())
    batches = (batch for _ in range(1000) for batch in loader)
    samples, start = 0, 0.0
    for step in range(iterations + 3):
        if step == 3:
            samples, start = 0, time.perf_counter()
        batch = next(batches)
        optimizer.zero_grad()
        segmenter.training_step(batch)["loss"].backward()
        optimizer.step()
        samples += batch["image"].shape[0]
    seconds = time.perf_counter() - start
    patch = "x".join(map(str, config.patch.patch_size))
    return {"pipeline": pipeline, "patch": patch, "samples_per_s": samples / seconds,
            "s_per_step": seconds / iterations, "batch": samples // iterations}


def _random_run(pipeline: str, data_root: Path, overrides: list[str], folder: Path) -> Path:
    """A run folder holding the pipeline's network with random weights."""
    config, _ = _planned(pipeline, data_root, overrides)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    torch.manual_seed(0)
    save_checkpoint(folder / "best.pt", {"config": dataclasses.asdict(config),
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


def _infer_one(run_dir: str, image: str, output: str) -> None:
    from medseg.inference import Predictor

    predictor = Predictor(run_dir, device="auto")
    start = time.perf_counter()
    predictor.predict_paths(image, output, overwrite=True, progress=False, log=lambda _: None)
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_gb": _peak_rss_gb()}))


def _monai_reference(run_dir: str, image: str, output: str) -> None:
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
    print(json.dumps({"seconds": time.perf_counter() - start, "peak_gb": _peak_rss_gb()}))


def _subprocess(kind: str, run_dir: Path, image: Path, output: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "medseg.benchmark", f"--{kind}", str(run_dir), str(image),
                             str(output)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--output", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the MONAI comparison script")
    parser.add_argument("--infer-one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--monai-reference", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.infer_one:
        return _infer_one(*args.infer_one)
    if args.monai_reference:
        return _monai_reference(*args.monai_reference)

    work = args.output or Path(tempfile.mkdtemp(prefix="medseg-benchmark-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; files in {work}")
    print("\ntraining throughput (random patches from 20 cached cases)")
    for pipeline, folder in (("hippocampus_patch", "hippocampus"), ("openkbp_patch", "openkbp_oar")):
        r = training_throughput(pipeline, args.data / folder)
        print(f"  {pipeline:20s} patch {r['patch']:10s} batch {r['batch']:2d}: "
              f"{r['samples_per_s']:6.1f} samples/s ({r['s_per_step']:.2f} s/step)")

    print("\ninference per case (own process: seconds, peak RSS)")
    cases = []
    for pipeline, folder in (("hippocampus_patch", "hippocampus"), ("openkbp_patch", "openkbp_oar")):
        run = _random_run(pipeline, args.data / folder, [], work / f"run_{pipeline}")
        cases.append((pipeline, run, discover_dataset(args.data / folder).cases[0].image))
    large = make_large_ct(args.data / "ct_example" / "example_ct.nii.gz", work / "large_ct.nii.gz")
    large_run = _random_run("openkbp_patch", args.data / "openkbp_oar", LARGE_CT_OVERRIDES, work / "run_large_ct")
    cases.append(("large CT 512x512x280", large_run, large))
    for name, run, image in cases:
        r = _subprocess("infer-one", run, image, work / f"pred_{run.name}")
        print(f"  medseg infer  {name:22s}: {r['seconds']:6.1f} s, peak {r['peak_gb']:.2f} GB")
    if not args.skip_reference:
        r = _subprocess("monai-reference", large_run, large, work / "pred_monai_reference")
        print(f"  MONAI script  {'large CT 512x512x280':22s}: {r['seconds']:6.1f} s, peak {r['peak_gb']:.2f} GB")


if __name__ == "__main__":
    main()
