"""``medseg compare``: several 2D models trained on the same axial slices with the same budget, each as an
ordinary run of the one Trainer, then one scoring pass on the same validation slices, one table and
one figure.

The output folder holds the comparison's ``config.yaml`` and ``split.json``, one run folder per model
(``<model>/``: checkpoints, ``train_log.jsonl``, TensorBoard, exact resume) and the results. Every model
also keeps its weights at 100, 200, 400, ... steps (``snapshots/``), so that the models are scored both
at the end of the shared budget and at the largest number of steps all of them reached, and the
learning curves show validation Dice against steps and against minutes. With
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

from medseg.config import Config, user_keys
from medseg.data.datasets import loader_items
from medseg.engine.budget import learning_curve, run_budget
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.loaders import make_loaders
from medseg.engine.plots import write_curves_svg
from medseg.engine.run_folder import create_run_folder, is_main_process, open_run_folder, rank_zero_log
from medseg.engine.trainer import Trainer, distributed_device, seed_everything
from medseg.hardware import cpu_has_native_bf16
from medseg.io import atomic_output
from medseg.models2d import ClassSpec, Model2D, Prediction2D, build_model_2d, evenly_spaced
from medseg.models2d.detector_plan import plan_detectors, provisional
from medseg.models2d.report import legend, markdown_table, write_csv, write_examples, write_instance_examples
from medseg.models2d.scoring import Evaluator2D
from medseg.models2d.slices import slice_sampling, volume_transforms
from medseg.models2d.targets import semantic_target
from medseg.planning.plan_file import render_planned
from medseg.planning.rules import Planned, cpu_bf16
from medseg.workflows.preparation import prepare_labelled_run, resume_labelled_run

Volume2D = tuple[torch.Tensor, torch.Tensor]  # image and dataset label values, [H, W, Z] each
SNAPSHOT_STEPS = [100 * 2**k for k in range(16)]  # equal-step scoring points: 100, 200, 400, ...


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
           per_case: int) -> tuple[dict[str, float], float, int, list[Prediction2D]]:
    """Scores over the evenly spaced slices of every validation volume, inference milliseconds per slice,
    the number of slices, and the predictions of ``examples`` (on the CPU)."""
    evaluator = Evaluator2D(model.classes)
    kept: dict[tuple[int, int], Prediction2D] = {}
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
                kept[(v, z)] = prediction.to("cpu")
    return evaluator.compute(), 1000.0 * seconds / max(count, 1), count, [kept[p] for p in examples]


def _summary(config: Config, split: dict, slices: int, classes: ClassSpec, results: dict,
             at_equal_steps: dict, equal_step: int | None, instance_models: list[str]) -> str:
    c, t = config.compare, config.train
    steps = f"{t.max_epochs} epochs"
    if t.iterations_per_epoch:
        steps += f" of {t.iterations_per_epoch} steps"
    budget = f"{steps} or {t.max_minutes:g} min, whichever came first," if t.max_minutes else steps
    equal = ([f"## At an equal number of steps ({equal_step} each)", "",
              "The same scoring of each model's weights at the largest snapshot step every model reached "
              "(its `snapshots/`); train_seconds is the time each took to get there.", "",
              markdown_table(at_equal_steps), ""] if at_equal_steps else
             ["No snapshot step was reached by every model (snapshots are kept at 100, 200, 400, ... steps).", ""])
    return "\n".join([
        f"# 2D model comparison: {config.name}",
        "",
        f"Data: `{config.data.root}`, {len(split['train'])} training and {len(split['validation'])} validation cases; "
        f"{slices} validation slices (axial, {c.slice_size[0]}x{c.slice_size[1]}). "
        f"Every model trained for {budget} on the same seeded batches of {t.batch_size} slices.",
        f"Classes: things {', '.join(classes.names[k] for k in classes.things) or 'none'}; "
        f"stuff {', '.join(classes.names[k] for k in classes.stuff) or 'none'}.",
        "",
        "## At the end of the budget",
        "",
        "Each model's last.pt.",
        "",
        markdown_table(results),
        "",
        *equal,
        "dice, iou: per slice, averaged over the slices where the class is predicted or present; precision, "
        "recall, f1: pixels pooled over all slices; means over foreground classes. mask_AP: COCO-style "
        "AP@[.5:.95] of the instances; PQ/SQ/RQ: panoptic quality. Models that detect things only score 0 "
        "on stuff classes. steps: optimiser steps; samples_seen: training slices; s_per_step and "
        f"train_seconds: training and validation time; infer_ms_per_slice: batches of {t.batch_size}.",
        "",
        "## Learning curves",
        "",
        "Validation mean Dice (the Trainer's, on the validation cases) against steps and against minutes: "
        "a model that is slow per step but learns much per step shows as such.",
        "",
        "![Dice by steps](curves_steps.svg) ![Dice by minutes](curves_minutes.svg)",
        "",
        "![examples](examples.png)",
        "",
        f"Columns: image, ground truth, {', '.join(results)}. Colours: {legend(classes.names)}.",
        "",
        *(["![instances](instances.png)", "",
           f"Columns: image, then the objects each of {', '.join(instance_models)} found: every instance "
           f"scoring at least {c.score_threshold:g} in a colour of its own, with its box, class and score; the "
           "panoptic model's segment map, stuff in its class colour.", ""] if instance_models else []),
    ])


def _planned_precision(config: Config, chosen: set[str], device: torch.device) -> tuple[Config, dict[str, Planned]]:
    """``config`` with bf16 autocast planned for every model as ``medseg train`` plans it, on a CPU where the
    user did not set ``train.cpu_bf16``: the same precision for all keeps the budget equal, and on a CPU
    with AMX it buys the detectors about twice the steps."""
    if device.type != "cpu" or "train.cpu_bf16" in chosen:
        return config, {}
    planned = cpu_bf16(cpu_has_native_bf16())
    return dataclasses.replace(config, train=dataclasses.replace(config.train, cpu_bf16=planned.value)), \
        {"train.cpu_bf16": planned}


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
    checked = dataclasses.replace(config, compare=provisional(c))
    detectors = [name for name in c.models if build_model_2d(name, checked, classes).needs_instances]  # errors now
    log(f"{len(split['train'])} training and {len(split['validation'])} validation cases; caching preprocessed volumes")
    volumes = volume_transforms(config)
    train_loader, val_loader = make_loaders(
        config, loader_items(run.part("train")), loader_items(run.part("validation")),
        volumes + slice_sampling(config), volumes, sampling_copies=True,
    )
    planned: dict[str, Planned] = {}
    if not resume:
        config, planned = _planned_precision(config, user_keys(config_path, overrides), device)
    if detectors:
        assert isinstance(train_loader.dataset, MonaiDataset)
        settings, planned_detectors = plan_detectors(c, train_loader.dataset, classes)
        config, c = dataclasses.replace(config, compare=settings), settings
        planned.update(planned_detectors)
    if is_main_process():
        create_run_folder(run_dir, config, split)
        if planned:
            source = (f" and from the instances of {len(split['train'])} training cases' slices" if detectors
                      else "")
            header = [f"planned for this machine{source}; config.yaml holds these values"]
            with atomic_output(run_dir / "plan.yaml") as tmp:
                tmp.write_text(render_planned(header, planned), encoding="utf-8")
    for key, value in planned.items():
        log(f"planned {key}: {value.value}  # {value.reason}")
    log(f"output folder: {run_dir}")

    for name in c.models:
        model_dir = run_dir / name
        lr = c.detector_lr if name in detectors and c.detector_lr else config.train.lr
        model_config = dataclasses.replace(
            config, compare=dataclasses.replace(c, models=[name]),
            train=dataclasses.replace(config.train, lr=lr,
                                      snapshot_steps=config.train.snapshot_steps or SNAPSHOT_STEPS))
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


def _equal_step(run_dir: Path, models: list[str]) -> int | None:
    """The largest snapshot step every model reached (None if one reached none)."""
    reached = [{int(p.stem.removeprefix("step_")) for p in (run_dir / name / "snapshots").glob("step_*.pt")}
               for name in models]
    common = set.intersection(*reached) if reached else set()
    return max(common) if common else None


def _restored(name: str, config: Config, classes: ClassSpec, path: Path, device: torch.device) -> tuple[Model2D, dict]:
    state = load_checkpoint(path)
    model = build_model_2d(name, config, classes)
    model.load_state_dict(state["model"])
    return model.to(device), state


def _write_curves(run_dir: Path, models: list[str]) -> None:
    """Validation Dice of every model against optimiser steps and against minutes."""
    for x, label, name in (("step", "optimiser steps", "curves_steps.svg"),
                           ("elapsed_min", "training minutes", "curves_minutes.svg")):
        curves = {m: learning_curve(run_dir / m, "val_mean_dice", x) for m in models}
        write_curves_svg(run_dir / name, curves, label, "validation mean Dice", f"Validation Dice by {label}")


def _score_all(config: Config, split: dict, classes: ClassSpec, run_dir: Path, val_dataset: MonaiDataset,
               log: Callable[[str], None]) -> None:
    """One scoring pass over every model's last checkpoint, and one at the largest step count all of them
    reached; writes results.csv, results_equal_steps.csv, results.md, examples.png and the curves."""
    c = config.compare
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    volumes = _validation_volumes(val_dataset)
    examples = _example_picks(volumes, c.val_slices_per_case, classes, c.examples)
    equal_step = _equal_step(run_dir, c.models)
    results: dict[str, dict[str, float]] = {}
    at_equal_steps: dict[str, dict[str, float]] = {}
    example_predictions: dict[str, list[Prediction2D]] = {}
    slices = 0
    for name in c.models:
        model, state = _restored(name, config, classes, run_dir / name / "last.pt", device)
        parameters = sum(p.numel() for p in model.parameters())
        scores, ms, slices, example_predictions[name] = _score(model, volumes, examples, c.val_slices_per_case)
        results[name] = {**scores, **run_budget(state, parameters).figures(), "infer_ms_per_slice": ms}
        log(f"{name}: mean Dice {scores['dice']:.4f} after {state['global_step']} steps")
        if equal_step is not None:
            if int(state["global_step"]) != equal_step:
                snapshot = run_dir / name / "snapshots" / f"step_{equal_step:07d}.pt"
                model, state = _restored(name, config, classes, snapshot, device)
                scores = _score(model, volumes, [], c.val_slices_per_case)[0]
            at_equal_steps[name] = {**scores, **run_budget(state, parameters).figures()}
    write_csv(run_dir / "results.csv", results)
    if at_equal_steps:
        write_csv(run_dir / "results_equal_steps.csv", at_equal_steps)
    _write_curves(run_dir, c.models)
    with_objects = {m: predictions for m, predictions in example_predictions.items()
                    if any(p.instances is not None or p.panoptic is not None for p in predictions)}
    with atomic_output(run_dir / "results.md") as tmp:
        tmp.write_text(_summary(config, split, slices, classes, results, at_equal_steps, equal_step,
                                list(with_objects)), encoding="utf-8")
    if examples:
        truths = [semantic_target(volumes[v][1][..., z], classes) for v, z in examples]
        images = [volumes[v][0][..., z] for v, z in examples]
        labels = {m: [p.labels for p in predictions] for m, predictions in example_predictions.items()}
        write_examples(run_dir / "examples.png", images, truths, labels, classes.num_classes)
        if with_objects:
            write_instance_examples(run_dir / "instances.png", images, with_objects, classes.names, c.score_threshold)
    log(markdown_table(results))
    if at_equal_steps:
        log(f"at {equal_step} steps each:\n{markdown_table(at_equal_steps)}")
    log(f"results: {run_dir / 'results.md'}")
