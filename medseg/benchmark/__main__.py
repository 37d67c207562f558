"""Speed and memory figures for the patch pipelines (a benchmark, not a test).

    python -m medseg.benchmark [--data ../shared/data] [--output benchmark_output]

Prints training samples/s for the hippocampus and OpenKBP pipelines (shipped and planned from the data)
before and after the speed settings (``engine/speed.py``), and inference seconds and peak
memory per case for both and for a large CT (``ct_example`` resampled to 512x512x280). The large CT is
also run through a MONAI bundle-style script (Spacingd, SlidingWindowInferer, Invertd, SaveImaged)
with the same network, for comparison. Each inference runs in its own process, so peak memory (max
RSS) is that case's alone. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from medseg.benchmark.inference_cases import (
    LARGE_CT_OVERRIDES,
    infer_one,
    make_large_ct,
    monai_reference,
    random_run,
)
from medseg.config import Config
from medseg.data.datasets import discover_dataset
from medseg.engine.trainer import Trainer, distributed_device
from medseg.hardware import cpu_has_native_bf16
from medseg.strategies import build_segmenter
from medseg.workflows.preparation import prepare_labelled_run
from medseg.workflows.training import segmentation_loaders

# (label, CONFIG or None for a plan from the data, dataset folder, train.max_minutes, strategy)
TRAINING_PIPELINES = (
    ("hippocampus_patch", "hippocampus_patch", "hippocampus", 10.0, "patch"),
    ("hippocampus planned, 10 min", None, "hippocampus", 10.0, "patch"),
    ("openkbp_patch", "openkbp_patch", "openkbp_oar", 30.0, "patch"),
    ("openkbp planned, 30 min", None, "openkbp_oar", 30.0, "patch"),
    ("openkbp planned slice2d", None, "openkbp_oar", 30.0, "slice2d"),
    ("openkbp planned lowres", None, "openkbp_oar", 30.0, "lowres"),
)

SPEED_VARIANTS = {  # the Trainer's settings before the speed work, and each setting added to it
    "before (fp32, contiguous)": ["train.channels_last=false", "train.cpu_bf16=false"],
    "channels-last, fp32": ["train.cpu_bf16=false"],
}
NATIVE_BF16_VARIANT = {"channels-last + cpu_bf16": ["train.cpu_bf16=true"]}


def _throughput(trainer: Trainer, iterations: int) -> tuple[float, float]:
    """Samples/s and s/step of the Trainer's own training epoch (data loading included), after one
    warm-up epoch."""
    trainer._train_epoch()
    start = time.perf_counter()
    samples_before = trainer.samples_seen
    trainer._train_epoch()
    seconds = time.perf_counter() - start
    return (trainer.samples_seen - samples_before) / seconds, seconds / iterations


def _input_size(config: Config) -> str:
    sizes = {"patch": config.patch.patch_size, "slice2d": config.slice2d.patch_size, "lowres": config.lowres.grid_size}
    return "x".join(map(str, sizes[config.model.strategy]))


def training_throughput(label: str, config_path: str | None, data_root: Path, minutes: float, strategy: str,
                        iterations: int = 12) -> list[dict]:
    """Samples/s of ``medseg train CONFIG --data DIR train.max_minutes=M`` (planned as train plans it),
    per speed variant, on 20 cached training cases; ``planned`` marks the variant the plan chose."""
    base = [f"train.max_minutes={minutes}", "train.progress=false", f"train.iterations_per_epoch={iterations}"]
    if config_path is None:
        base.append(f"model.strategy={strategy}")
    device = distributed_device()
    native = cpu_has_native_bf16() and device.type == "cpu"
    variants = {**SPEED_VARIANTS, **(NATIVE_BF16_VARIANT if native else {})}
    rows, loaders = [], None
    with tempfile.TemporaryDirectory() as unused:
        as_planned = prepare_labelled_run("train", config_path, data_root, Path(unused) / "run", base,
                                          plan_for="cuda" if device.type == "cuda" else "cpu").config.train
        for name, overrides in variants.items():
            run = prepare_labelled_run("train", config_path, data_root, Path(unused) / "run", [*base, *overrides],
                                       plan_for="cuda" if device.type == "cuda" else "cpu")
            config = run.config
            torch.manual_seed(0)
            segmenter = build_segmenter(config)
            if loaders is None:
                cases = run.part("train")[:20]
                loaders = segmentation_loaders(config, segmenter, cases, cases[:1])
            trainer = Trainer(segmenter, config, Path(unused) / "run", *loaders, device)
            samples_per_s, s_per_step = _throughput(trainer, iterations)
            planned = (config.train.channels_last, config.train.cpu_bf16) == (as_planned.channels_last,
                                                                               as_planned.cpu_bf16)
            rows.append({"pipeline": label, "variant": name, "input": _input_size(config),
                         "batch": config.train.batch_size * config.data.samples_per_volume, "planned": planned,
                         "samples_per_s": samples_per_s, "s_per_step": s_per_step})
    return rows


def _subprocess(kind: str, run_dir: Path, image: Path, output: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "medseg.benchmark", f"--{kind}", str(run_dir), str(image),
                             str(output)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--output", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--skip-reference", action="store_true", help="do not run the MONAI comparison script")
    parser.add_argument("--training-only", action="store_true", help="only the training samples/s")
    parser.add_argument("--infer-one", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--monai-reference", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.infer_one:
        return infer_one(*args.infer_one)
    if args.monai_reference:
        return monai_reference(*args.monai_reference)

    work = args.output or Path(tempfile.mkdtemp(prefix="medseg-benchmark-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}; files in {work}")
    print("\ntraining samples/s: the Trainer's epoch, data loading included (20 cached training cases)")
    print("  (* the settings the run's plan chose on this machine)")
    for label, config_path, folder, minutes, strategy in TRAINING_PIPELINES:
        for r in training_throughput(label, config_path, args.data / folder, minutes, strategy):
            print(f"  {r['pipeline']:28s} {r['variant']:26s}{'*' if r['planned'] else ' '} {r['input']:10s} "
                  f"x{r['batch']:2d}: {r['samples_per_s']:6.1f} samples/s ({r['s_per_step']:.2f} s/step)", flush=True)
    if args.training_only:
        return None

    print("\ninference per case (own process: seconds, peak RSS)")
    cases = []
    for pipeline, folder in (("hippocampus_patch", "hippocampus"), ("openkbp_patch", "openkbp_oar")):
        run = random_run(pipeline, args.data / folder, [], work / f"run_{pipeline}")
        cases.append((pipeline, run, discover_dataset(args.data / folder).cases[0].image))
    large = make_large_ct(args.data / "ct_example" / "example_ct.nii.gz", work / "large_ct.nii.gz")
    large_run = random_run("openkbp_patch", args.data / "openkbp_oar", LARGE_CT_OVERRIDES, work / "run_large_ct")
    cases.append(("large CT 512x512x280", large_run, large))
    for name, run, image in cases:
        r = _subprocess("infer-one", run, image, work / f"pred_{run.name}")
        print(f"  medseg infer  {name:22s}: {r['seconds']:6.1f} s, peak {r['peak_gb']:.2f} GB")
    if not args.skip_reference:
        r = _subprocess("monai-reference", large_run, large, work / "pred_monai_reference")
        print(f"  MONAI script  {'large CT 512x512x280':22s}: {r['seconds']:6.1f} s, peak {r['peak_gb']:.2f} GB")


if __name__ == "__main__":
    main()
