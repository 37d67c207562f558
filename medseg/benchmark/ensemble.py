"""A k-fold ensemble against its single folds, on cases none of them trained on (a benchmark, not a test).

    python -m medseg.benchmark.ensemble --data ../shared/data/hippocampus --output runs/ensemble --minutes 3

A seeded 20% of the dataset's cases is held out. The rest becomes a dataset of its own (symbolic links
and a dataset.json listing only those cases) on which ``medseg train --data DIR data.num_folds=K
--folds all`` trains every fold for the same minutes. Every fold alone and the ensemble of all of them
(``medseg infer --model PARENT``) predict the held-out cases, which are scored in their own geometry.
The report gives each fold's Dice, their mean and spread, and the ensemble's, with each fold's steps.
KEY=VALUE overrides go to every fold. Folds already trained in ``--output`` are reused as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from medseg.benchmark.command_line import print_report
from medseg.data.datasets import discover_dataset
from medseg.data.splits import make_split
from medseg.engine.budget import run_budget
from medseg.engine.checkpoint import load_checkpoint
from medseg.errors import MedsegError
from medseg.evaluation import evaluate_folders
from medseg.inference import Predictor
from medseg.inference.ensemble import Ensemble
from medseg.io import atomic_output
from medseg.workflows.folds import train_folds, trained_folds

HOLD_OUT_SEED = 12345  # not the training split's seed: the held-out cases are chosen apart from it


def hold_out(data: Path, output: Path, fraction: float) -> tuple[Path, Path, Path, list[str]]:
    """Link the dataset's cases into ``output``: a training dataset of the cases kept, and the held-out
    images and labels. Returns (training dataset, held-out images, held-out labels, class names)."""
    dataset = discover_dataset(data)
    split = make_split([c.case_id for c in dataset.cases], val_fraction=fraction, seed=HOLD_OUT_SEED)
    held = set(split["validation"])
    train_root, images, labels = (output / "training_data", output / "held_out" / "images",
                                  output / "held_out" / "labels")
    for folder in (train_root / "imagesTr", train_root / "labelsTr", images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    listing = []
    for case in dataset.cases:
        assert case.label is not None
        if case.case_id in held:
            pairs = [(images / case.image.name, case.image), (labels / f"{case.case_id}.nii.gz", case.label)]
        else:
            pairs = [(train_root / "imagesTr" / case.image.name, case.image),
                     (train_root / "labelsTr" / case.label.name, case.label)]
            listing.append({"image": f"./imagesTr/{case.image.name}", "label": f"./labelsTr/{case.label.name}"})
        for link, target in pairs:
            if not link.exists():
                link.symlink_to(target.resolve())
    names = dataset.class_names
    if not names:
        raise MedsegError(f"{data}: the dataset names no classes (dataset.json 'labels')")
    meta = {"name": f"{data.name} without its held-out cases", "labels": dict(enumerate(names)),
            "modality": {"0": dataset.modality or "unknown"}, "numTraining": len(listing), "training": listing}
    (train_root / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return train_root, images, labels, names


def score(model: Predictor | Ensemble, images: Path, labels: Path, output: Path, names: list[str]) -> dict:
    """Predict the held-out images and score them (mean and per-class Dice)."""
    model.predict_paths(images, output / "predictions", overwrite=True, progress=False, log=lambda _: None)
    result = evaluate_folders(output / "predictions", labels, dict(enumerate(names[1:], start=1)),
                              output / "metrics.json", include_hd95=False)
    return result.summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget of each fold")
    parser.add_argument("--hold-out", type=float, default=0.2, help="fraction of the cases no fold trains on")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for every fold")
    args = parser.parse_args(argv)
    return print_report(lambda: report(args))


def report(args: argparse.Namespace) -> str:
    train_root, images, labels, names = hold_out(args.data, args.output, args.hold_out)
    parent = args.output / "folds"
    overrides = [f"data.num_folds={args.folds}", f"train.max_minutes={args.minutes}", "train.progress=false",
                 *args.overrides]
    done = {run.name for run in trained_folds(parent)}
    todo = [k for k in range(args.folds) if f"fold_{k}" not in done]
    if todo:
        train_folds(None, ",".join(map(str, todo)), train_root, parent, overrides=overrides)
    runs = trained_folds(parent)
    rows = []
    for run in runs:
        summary = score(Predictor(run), images, labels, args.output / "scores" / run.name, names)
        budget = run_budget(load_checkpoint(run / "last.pt"), 0)
        rows.append((run.name, summary, budget))
    start = time.perf_counter()
    ensemble = score(Ensemble(runs), images, labels, args.output / "scores" / "ensemble", names)
    ensemble_seconds = (time.perf_counter() - start) / len(list(images.iterdir()))
    fold_means = [float(s["mean_dice"]) for _, s, _ in rows]
    mean = sum(fold_means) / len(fold_means)
    spread = (sum((d - mean) ** 2 for d in fold_means) / max(1, len(fold_means) - 1)) ** 0.5
    classes = names[1:]
    lines = [f"# {len(runs)}-fold ensemble against single folds on {args.data.name}", "",
             f"{len(list(images.iterdir()))} held-out cases (seed {HOLD_OUT_SEED}, {args.hold_out:.0%}), none seen by "
             f"any fold; each fold trained {args.minutes:g} minutes on its share of the rest. Overrides: "
             f"{' '.join(args.overrides) or 'none'}. Machine time of this report: {time.strftime('%Y-%m-%d %H:%M')}.",
             "", "| model | " + " | ".join(classes) + " | mean Dice | steps | s/step |",
             "|---" * (len(classes) + 4) + "|"]
    for name, summary, budget in rows:
        per_class = " | ".join(f"{summary['per_class'][c]['dice']:.4f}" for c in classes)
        lines.append(f"| {name} | {per_class} | {summary['mean_dice']:.4f} | {budget.steps} | "
                     f"{budget.seconds_per_step:.2f} |")
    per_class = " | ".join(f"{ensemble['per_class'][c]['dice']:.4f}" for c in classes)
    lines += [f"| ensemble of {len(runs)} | {per_class} | {ensemble['mean_dice']:.4f} | – | – |", "",
              f"Single folds: mean Dice {mean:.4f} ± {spread:.4f} (std over folds). Ensemble: "
              f"{ensemble['mean_dice']:.4f} ({ensemble['mean_dice'] - mean:+.4f} against the folds' mean), "
              f"{ensemble_seconds:.2f} s per case to predict and write.", ""]
    text = "\n".join(lines)
    with atomic_output(args.output / "results.md") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return text


if __name__ == "__main__":
    sys.exit(main())
