"""``medseg demo``: the whole workflow on synthetic CT phantoms, in a few minutes on a laptop CPU.

Generates a training set and a separate test set, trains, predicts the test scans with sliding-window
inference, evaluates, and prints a per-class Dice table. Nothing existing is overwritten: data already
generated is reused and every demo run gets its own run folder.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from medseg.data.phantom import generate_phantom_dataset
from medseg.errors import MedsegError
from medseg.evaluation import evaluate_folders, format_table
from medseg.inference import Predictor
from medseg.workflows.strategy_comparison import comparison_table, strategy_result, write_comparison_curves
from medseg.workflows.training import train

# Kept identical to pipelines/demo_<strategy>.yaml (a test checks it) so the demo is reproducible
# with `medseg train pipelines/demo_patch.yaml --data demo_output/data`.
DEMO_OVERRIDES: dict[str, list[str]] = {
    "patch": [
        "name=demo_patch",
        "data.spacing=[1.5,1.5,2.5]",
        "patch.patch_size=[64,64,32]",
        "data.samples_per_volume=2",
        "data.augment.affine_prob=0.2",
        "model.network=unet",
        "model.channels=[16,32,64,128]",
        "model.strides=[2,2,2]",
        "model.num_res_units=1",
        "train.max_epochs=1000",
        "train.max_minutes=3",
        "train.iterations_per_epoch=25",
        "train.batch_size=2",
        "train.lr=0.003",
        "train.val_every=2",
        "infer.overlap=0.25",
    ],
    "slice2d": [
        "name=demo_slice2d",
        "data.spacing=[1.5,1.5,2.5]",
        "data.samples_per_volume=2",
        "data.augment.affine_prob=0.2",
        "model.strategy=slice2d",
        "model.network=unet2d",
        "model.channels=[16,32,64,128]",
        "model.strides=[2,2,2]",
        "model.num_res_units=1",
        "slice2d.context_slices=1",
        "slice2d.patch_size=[80,80]",
        "train.max_epochs=1000",
        "train.max_minutes=3",
        "train.iterations_per_epoch=25",
        "train.batch_size=8",
        "train.lr=0.003",
        "train.val_every=2",
        "infer.overlap=0.25",
        "infer.sw_batch_size=16",
    ],
    "lowres": [
        "name=demo_lowres",
        "data.spacing=[1.5,1.5,2.5]",
        "data.augment.affine_prob=0.2",
        "model.strategy=lowres",
        "model.network=vnet",
        "model.channels=[8,16,32,64,128]",
        "model.kernel_sizes=[3,3,3,3,3]",
        "lowres.grid_size=[64,64,32]",
        "train.max_epochs=1000",
        "train.max_minutes=3",
        "train.iterations_per_epoch=10",
        "train.batch_size=2",
        "train.lr=0.001",
        "train.val_every=2",
    ],
}
TRAIN_CASES, TEST_CASES = 20, 4


def _dataset(folder: Path, num_cases: int, seed: int, log: Callable[[str], None]) -> Path:
    if (folder / "dataset.json").is_file():
        log(f"reusing synthetic data in {folder}")
        return folder
    if folder.exists() and any(folder.iterdir()):
        raise MedsegError(f"{folder}: folder exists without a dataset.json; remove it or choose another --output")
    log(f"generating {num_cases} synthetic CT phantoms in {folder}")
    return generate_phantom_dataset(folder, num_cases=num_cases, seed=seed)


def _strategies(strategy: str) -> list[str]:
    names = list(DEMO_OVERRIDES) if strategy == "all" else [n.strip() for n in strategy.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEMO_OVERRIDES]
    if unknown or not names:
        raise MedsegError(f"--strategy: no demo for '{','.join(unknown) or strategy}'; "
                          f"available: {', '.join(DEMO_OVERRIDES)} or all")
    return names


def run_demo(output: str | Path = "demo_output", strategy: str = "patch", minutes: float = 3.0,
             log: Callable[[str], None] = print) -> list[Path]:
    """Run the demo into ``output`` for one strategy, several (comma-separated) or ``all``, each with
    ``minutes`` of training; with several, a comparison table and learning curves close the output.
    Returns the run folders."""
    names = _strategies(strategy)
    start = time.perf_counter()
    output = Path(output)
    train_dir = _dataset(output / "data", TRAIN_CASES, seed=0, log=log)
    test_dir = _dataset(output / "test", TEST_CASES, seed=1, log=log)
    results = []
    for name in names:
        run_dir = output / f"run-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        overrides = [*DEMO_OVERRIDES[name], f"train.max_minutes={minutes}"]
        train(None, data_dir=train_dir, output=run_dir, overrides=overrides, log=log)
        predictions = run_dir / "test_predictions"
        infer_start = time.perf_counter()
        Predictor(run_dir).predict_paths(test_dir / "imagesTr", predictions, progress=False, log=log)
        seconds = (time.perf_counter() - infer_start) / TEST_CASES
        result = evaluate_folders(predictions, test_dir / "labelsTr", output_json=run_dir / "test_metrics.json",
                                  class_names={1: "liver", 2: "kidney", 3: "spine"})
        log(f"\nheld-out test cases ({TEST_CASES}), strategy '{name}':\n{format_table(result)}")
        log(f"run folder:  {run_dir}  (tensorboard --logdir {run_dir / 'tensorboard'})")
        log(f"predictions: {predictions}; metrics: {run_dir / 'test_metrics.json'} and .csv")
        results.append(strategy_result(name, run_dir, result.summary, seconds))
    if len(results) > 1:
        log(f"\ncomparison on the held-out test cases (Dice), {minutes:g} min of training each "
            "(samples: training crops or slices seen; s/step: training and validation time per step):\n"
            + comparison_table(results))
        curves_dir = output / f"comparison-{time.strftime('%Y%m%d-%H%M%S')}"
        write_comparison_curves(curves_dir, results, "Demo strategies")
        log(f"learning curves (validation Dice by steps and by minutes): {curves_dir}")
    log(f"\ndone in {(time.perf_counter() - start) / 60:.1f} min")
    return [r.run_dir for r in results]


def run(args: argparse.Namespace) -> int:
    run_demo(args.output, strategy=args.strategy, minutes=args.minutes)
    return 0
