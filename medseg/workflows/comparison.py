"""``medseg compare``: several 2D models trained on the same axial slices with the same budget, each as an
ordinary run of the one Trainer, then one scoring pass on the same validation slices, one table and
one figure.

The output folder holds the comparison's ``config.yaml`` and ``split.json``, one run folder per model
(``<model>/``: checkpoints, ``train_log.jsonl``, TensorBoard, exact resume) and the results. With
``--resume`` an interrupted comparison continues: finished models are kept, the interrupted one resumes
from its last checkpoint, the others start. Everything that can fail on user input (config keys and
values, class groups, model names, sizes, dataset layout, headers) fails before anything is written;
every model is built once up front for that reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.data import Dataset as MonaiDataset

from medseg.config import Config
from medseg.data.datasets import loader_items
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.loaders import make_loaders
from medseg.engine.run_folder import create_run_folder, is_main_process, open_run_folder, rank_zero_log
from medseg.engine.trainer import Trainer, distributed_device, seed_everything
from medseg.io import atomic_output
from medseg.models2d import ClassSpec, Model2D, build_model_2d, evenly_spaced
from medseg.models2d.report import legend, markdown_table, write_csv, write_examples
from medseg.models2d.scoring import Evaluator2D
from medseg.models2d.slices import slice_sampling, volume_transforms
from medseg.models2d.targets import semantic_target
from medseg.workflows.preparation import prepare_labelled_run, resume_labelled_run

Volume2D = tuple[torch.Tensor, torch.Tensor]  # image and dataset label values, [H, W, Z] each


def _validation_volumes(dataset: MonaiDataset) -> list[Volume2D]:
    """The cached validation volumes as plain [H, W, Z] tensors."""
    volumes: list[Volume2D] = []
    for i in range(len(dataset)):
        item = dataset[i]
        image, label = (item[k].as_subclass(torch.Tensor)[0] for k in ("image", "label"))
        volumes.append((image, label))
    return volumes


def _prefixed(log: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    """``log`` with every message starting ``<prefix>: ``."""
    return lambda message: log(f"{prefix}: {message}")


def _example_picks(volumes: list[Volume2D], per_case: int, classes: ClassSpec, count: int) -> list[tuple[int, int]]:
    """The scored validation slices showing the most classes (then the most foreground), one per case."""
    def richness(pick: tuple[int, int]) -> tuple[int, int]:
        labels = semantic_target(volumes[pick[0]][1][..., pick[1]], classes)
        return len(torch.unique(labels[labels > 0])), int((labels > 0).sum())

    picks = [(v, z) for v, (image, _) in enumerate(volumes) for z in evenly_spaced(image.shape[-1], per_case)]
    chosen: list[tuple[int, int]] = []
    for pick in sorted(picks, key=richness, reverse=True):
        if len(chosen) < count and all(pick[0] != v for v, _ in chosen):
            chosen.append(pick)
    return chosen


def _score(model: Model2D, volumes: list[Volume2D], examples: list[tuple[int, int]],
           per_case: int) -> tuple[dict[str, float], float, int, list[torch.Tensor]]:
    """Scores over the evenly spaced slices of every validation volume, inference milliseconds per slice,
    the number of slices, and the label maps of ``examples``."""
    evaluator = Evaluator2D(model.classes)
    kept: dict[tuple[int, int], torch.Tensor] = {}
    seconds, count = 0.0, 0
    for v, (image, label) in enumerate(volumes):
        indices = evenly_spaced(image.shape[-1], per_case)
        start = time.perf_counter()
        predictions = model.predict_slices(image, indices)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        count += len(indices)
        for z, prediction in zip(indices, predictions):
            evaluator.add(prediction, label[..., z])
            if (v, z) in examples:
                kept[(v, z)] = prediction.labels.cpu()
    return evaluator.compute(), 1000.0 * seconds / max(count, 1), count, [kept[p] for p in examples]


def _summary(config: Config, split: dict, slices: int, classes: ClassSpec, results: dict) -> str:
    c, t = config.compare, config.train
    steps = f"{t.max_epochs} epochs"
    if t.iterations_per_epoch:
        steps += f" of {t.iterations_per_epoch} steps"
    budget = f"{steps} or {t.max_minutes:g} min, whichever came first," if t.max_minutes else steps
    return "\n".join([
        f"# 2D model comparison: {config.name}",
        "",
        f"Data: `{config.data.root}`, {len(split['train'])} training and {len(split['validation'])} validation cases; "
        f"{slices} validation slices (axial, {c.slice_size[0]}x{c.slice_size[1]}). "
        f"Every model trained for {budget} on the same seeded batches of {t.batch_size} slices; "
        "each is scored at the end of its budget (its run folder's last.pt).",
        f"Classes: things {', '.join(classes.names[k] for k in classes.things) or 'none'}; "
        f"stuff {', '.join(classes.names[k] for k in classes.stuff) or 'none'}.",
        "",
        markdown_table(results),
        "",
        "dice, iou: per slice, averaged over the slices where the class is predicted or present; precision, "
        "recall, f1: pixels pooled over all slices; means over foreground classes. mask_AP: COCO-style "
        "AP@[.5:.95] of the instances; PQ/SQ/RQ: panoptic quality. Models that detect things only score 0 "
        "on stuff classes. steps: optimiser steps; train_seconds: training and validation time; "
        f"infer_ms_per_slice: batches of {t.batch_size}.",
        "",
        "![examples](examples.png)",
        "",
        f"Columns: image, ground truth, {', '.join(results)}. Colours: {legend(classes.names)}.",
        "",
    ])


def run_compare(
    config_path: str | Path | None,
    data_dir: str | Path | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train every model of ``compare.models`` in its own run folder, then score them all; returns the
    output folder (results.md, results.csv, examples.png, config.yaml, split.json, <model>/)."""
    overrides = list(overrides or [])
    device = distributed_device()
    log = rank_zero_log(log)
    run = (resume_labelled_run("compare", output, overrides, required=("config.yaml", "split.json")) if resume
           else prepare_labelled_run("compare", config_path, data_dir, output, overrides))
    config, split, run_dir = run.config, run.split, run.run_dir
    c = config.compare
    classes = ClassSpec.from_config(config.data.class_names or [], c.groups, c.stuff_classes)
    for name in c.models:
        build_model_2d(name, config, classes)  # settings errors now, not after an hour of training
    log(f"{len(split['train'])} training and {len(split['validation'])} validation cases; caching preprocessed volumes")
    volumes = volume_transforms(config)
    train_loader, val_loader = make_loaders(
        config, loader_items(run.part("train")), loader_items(run.part("validation")),
        volumes + slice_sampling(config), volumes, sampling_copies=True,
    )
    if is_main_process():
        create_run_folder(run_dir, config, split)
    log(f"output folder: {run_dir}")

    for name in c.models:
        model_dir = run_dir / name
        model_config = dataclasses.replace(config, compare=dataclasses.replace(c, models=[name]))
        seed_everything(config.train.seed)
        trainer = Trainer(build_model_2d(name, model_config, classes), model_config, model_dir, train_loader,
                          val_loader, device)
        continues = resume and (model_dir / "last.pt").is_file()
        hooks = open_run_folder(model_dir, model_config, split, lambda _: None)
        result = trainer.fit(hooks, resume=continues, log=_prefixed(log, name))
        log(f"{name}: {trainer.global_step} steps in {trainer.elapsed_s:.0f} s ({result.epochs_run} epochs this time)")

    if is_main_process():
        val_dataset = val_loader.dataset
        assert isinstance(val_dataset, MonaiDataset)  # make_loaders caches the volumes in a MONAI CacheDataset
        _score_all(config, split, classes, run_dir, val_dataset, log)
    return run_dir


def _score_all(config: Config, split: dict, classes: ClassSpec, run_dir: Path, val_dataset: MonaiDataset,
               log: Callable[[str], None]) -> None:
    """One scoring pass over every model's last checkpoint; writes results.csv, results.md, examples.png."""
    c = config.compare
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    volumes = _validation_volumes(val_dataset)
    examples = _example_picks(volumes, c.val_slices_per_case, classes, c.examples)
    results: dict[str, dict[str, float]] = {}
    example_labels: dict[str, list[torch.Tensor]] = {}
    slices = 0
    for name in c.models:
        state = load_checkpoint(run_dir / name / "last.pt")
        model = build_model_2d(name, config, classes)
        model.load_state_dict(state["model"])
        model.to(device)
        scores, ms, slices, example_labels[name] = _score(model, volumes, examples, c.val_slices_per_case)
        results[name] = {**scores, "steps": int(state["global_step"]), "train_seconds": float(state["elapsed_s"]),
                         "infer_ms_per_slice": ms, "parameters": sum(p.numel() for p in model.parameters())}
        log(f"{name}: mean Dice {scores['dice']:.4f}")
    write_csv(run_dir / "results.csv", results)
    with atomic_output(run_dir / "results.md") as tmp:
        tmp.write_text(_summary(config, split, slices, classes, results), encoding="utf-8")
    if examples:
        truths = [semantic_target(volumes[v][1][..., z], classes) for v, z in examples]
        write_examples(run_dir / "examples.png", [volumes[v][0][..., z] for v, z in examples], truths,
                       example_labels, classes.num_classes)
    log(markdown_table(results))
    log(f"results: {run_dir / 'results.md'}")
