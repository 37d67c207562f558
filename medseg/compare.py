"""``medseg compare``: train several 2D models on the same axial slices with the same budget, score them
with one evaluator on the same validation slices, and write one table and one figure.

Everything that can fail on user input (config keys, class groups, model names, sizes, dataset layout,
headers) fails before the output folder is created; every model is built once up front for that reason.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from medseg.config import Config, config_to_dict, load_config, save_config
from medseg.data.datasets import Case, discover_dataset
from medseg.data.planning import plan
from medseg.data.splits import make_split
from medseg.engine.trainer import build_optimizer, learning_rate, seed_everything
from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.models2d import MODELS_2D, ClassSpec, Model2D, build_model_2d
from medseg.models2d.report import legend, markdown_table, write_csv, write_examples
from medseg.models2d.scoring import Evaluator2D
from medseg.models2d.slices import SliceSampler, SliceVolume, load_volumes, stack_slices, validation_slices
from medseg.models2d.targets import make_batch, semantic_target
from medseg.training import check_headers, write_json

LOG_EVERY_S = 30.0
SIZE_MULTIPLE = 32  # the FPN's coarsest level; U-Nets need their own stride product as well


def _check_settings(config: Config) -> None:
    c = config.compare
    if not c.models or len(set(c.models)) != len(c.models):
        raise MedsegError(f"config key 'compare.models': expected distinct model names, got {c.models}")
    for name in c.models:
        if name not in MODELS_2D.names():
            raise MedsegError(f"config key 'compare.models': unknown model '{name}'; valid: {', '.join(MODELS_2D.names())}")
    multiple = math.lcm(SIZE_MULTIPLE, math.prod(config.model.strides))
    if len(c.slice_size) != 2 or any(s <= 0 or s % multiple for s in c.slice_size):
        raise MedsegError(f"config key 'compare.slice_size': expected two sides divisible by {multiple}, got {c.slice_size}")
    if c.max_minutes is None and c.max_steps is None:
        raise MedsegError("config keys 'compare.max_minutes'/'compare.max_steps': set at least one training budget")
    positive = {"batch_size": c.batch_size, "val_slices_per_case": c.val_slices_per_case,
                "detections_per_image": c.detections_per_image,
                "max_minutes": c.max_minutes, "max_steps": c.max_steps}
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise MedsegError(f"config key 'compare.{key}': must be positive, got {value}")
    for key in ("score_threshold", "overlap_threshold", "mask_threshold"):
        if not 0.0 <= getattr(c, key) <= 1.0:
            raise MedsegError(f"config key 'compare.{key}': must be between 0 and 1, got {getattr(c, key)}")
    if c.stuff_area_limit < 0 or c.examples < 0:
        raise MedsegError("config keys 'compare.stuff_area_limit'/'compare.examples': must not be negative")


def _prepare(config_path, data_dir, overrides) -> tuple[Config, dict[str, list[str]], dict[str, Case]]:
    config = load_config(config_path, overrides)
    if data_dir is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(data_dir)))
    if not config.data.root:
        raise MedsegError("no dataset: pass --data DIR or set data.root in the config")
    _check_settings(config)
    dataset = discover_dataset(config.data.root)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(dataset.root.resolve())))
    cases = dataset.cases[: config.data.max_cases] if config.data.max_cases else dataset.cases
    num_classes = len(dataset.class_names) if dataset.class_names else None
    check_headers(cases, num_classes)
    d = config.data
    split = make_split([c.case_id for c in cases], d.val_fraction, d.num_folds, d.fold, d.split_seed)
    by_id = {c.case_id: c for c in cases}
    return plan(config, dataset, [by_id[i] for i in split["train"]]), split, by_id


def _output_dir(output: str | Path | None, name: str) -> Path:
    run_dir = Path(output) if output else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise MedsegError(f"{run_dir}: output folder exists and is not empty; choose another --output")
    return run_dir


def _train(model: Model2D, name: str, config: Config, classes: ClassSpec, sampler: SliceSampler,
           device: torch.device, log: Callable[[str], None]) -> tuple[int, float]:
    """Train until ``compare.max_steps`` or ``compare.max_minutes``; returns steps and seconds. The
    learning rate follows ``train.scheduler`` over that budget (``train.warmup_epochs`` counts steps)."""
    c = config.compare
    budget = dataclasses.replace(config, train=dataclasses.replace(
        config.train, max_epochs=c.max_steps or sys.maxsize, max_minutes=c.max_minutes))
    optimizer = build_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    steps, start, last_log = 0, time.perf_counter(), -LOG_EVERY_S
    while steps != c.max_steps and not (c.max_minutes and time.perf_counter() - start >= 60 * c.max_minutes):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(budget, steps, time.perf_counter() - start)
        batch = make_batch(*sampler.batch(c.batch_size), classes, with_instances=model.needs_instances).to(device)
        losses = model.training_step(batch)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise MedsegError(f"model '{name}': loss is {loss.item()} at step {steps + 1}; lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
        optimizer.step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed - last_log >= LOG_EVERY_S:
            terms = ", ".join(f"{k} {v.item():.3f}" for k, v in losses.items())
            log(f"{name}: step {steps}, {elapsed:.0f} s, loss {loss.item():.4f} ({terms})")
            last_log = elapsed
    return steps, time.perf_counter() - start


def _evaluate(model: Model2D, volumes: list[SliceVolume], picks: list[tuple[int, int]], examples: list[tuple[int, int]],
              classes: ClassSpec, batch_size: int, device: torch.device) -> tuple[dict[str, float], float, list[torch.Tensor]]:
    """Scores over ``picks``, inference milliseconds per slice, and the label maps of ``examples``."""
    evaluator = Evaluator2D(classes)
    kept: dict[tuple[int, int], torch.Tensor] = {}
    seconds = 0.0
    for first in range(0, len(picks), batch_size):
        chunk = picks[first : first + batch_size]
        images, labels = stack_slices(volumes, chunk)
        start = time.perf_counter()
        predictions = model.predict(images.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - start
        for pick, prediction, label in zip(chunk, predictions, labels):
            evaluator.add(prediction, label)
            if pick in examples:
                kept[pick] = prediction.labels.cpu()
    return evaluator.compute(), 1000.0 * seconds / len(picks), [kept[p] for p in examples]


def _example_picks(volumes: list[SliceVolume], picks: list[tuple[int, int]], classes: ClassSpec,
                   count: int) -> list[tuple[int, int]]:
    """The validation slices showing the most classes (then the most foreground), one per case."""
    def richness(pick: tuple[int, int]) -> tuple[int, int]:
        labels = semantic_target(volumes[pick[0]].label[..., pick[1]], classes)
        return len(torch.unique(labels[labels > 0])), int((labels > 0).sum())

    chosen: list[tuple[int, int]] = []
    for pick in sorted(picks, key=richness, reverse=True):
        if len(chosen) < count and all(pick[0] != v for v, _ in chosen):
            chosen.append(pick)
    return chosen


def _summary(config: Config, split: dict, picks: list, classes: ClassSpec, results: dict) -> str:
    c = config.compare
    limits = [f"{c.max_minutes:g} min" if c.max_minutes else "", f"{c.max_steps} steps" if c.max_steps else ""]
    budget = " or ".join(x for x in limits if x) + (", whichever came first," if all(limits) else "")
    return "\n".join([
        f"# 2D model comparison: {config.name}",
        "",
        f"Data: `{config.data.root}`, {len(split['train'])} training and {len(split['validation'])} validation cases; "
        f"{len(picks)} validation slices (axial, {c.slice_size[0]}x{c.slice_size[1]}). "
        f"Every model trained for {budget} on the same seeded batches of {c.batch_size} slices.",
        f"Classes: things {', '.join(classes.names[k] for k in classes.things) or 'none'}; "
        f"stuff {', '.join(classes.names[k] for k in classes.stuff) or 'none'}.",
        "",
        markdown_table(results),
        "",
        "dice, iou: per slice, averaged over the slices where the class is predicted or present; precision, "
        "recall, f1: pixels pooled over all slices; means over foreground classes. mask_AP: COCO-style "
        "AP@[.5:.95] of the instances; PQ/SQ/RQ: panoptic quality. Models that detect things only score 0 "
        "on stuff classes. infer_ms_per_slice: batches of "
        f"{c.batch_size}.",
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
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train and score every model of ``compare.models``; returns the output folder (results.md,
    results.csv, examples.png, config.yaml, split.json, models/<name>.pt)."""
    config, split, by_id = _prepare(config_path, data_dir, overrides)
    c = config.compare
    classes = ClassSpec.from_config(config.data.class_names, c.groups, c.stuff_classes)
    for name in c.models:
        build_model_2d(name, config, classes)  # settings errors now, not after an hour of training
    run_dir = _output_dir(output, config.name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log(f"{len(split['train'])} training and {len(split['validation'])} validation cases; preprocessing")
    train_volumes = load_volumes(config, [by_id[i] for i in split["train"]], log)
    val_volumes = load_volumes(config, [by_id[i] for i in split["validation"]], log)
    picks = validation_slices(val_volumes, c.val_slices_per_case)
    examples = _example_picks(val_volumes, picks, classes, c.examples)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    write_json(run_dir / "split.json", split)
    log(f"output folder: {run_dir}")

    results: dict[str, dict[str, float]] = {}
    example_labels: dict[str, list[torch.Tensor]] = {}
    for name in c.models:
        seed_everything(config.train.seed)
        model = build_model_2d(name, config, classes).to(device)
        sampler = SliceSampler(train_volumes, config.data.pos_fraction, config.train.seed)
        log(f"{name}: training")
        steps, seconds = _train(model, name, config, classes, sampler, device, log)
        with atomic_output(run_dir / "models" / f"{name}.pt") as tmp:
            torch.save({"model": model.state_dict(), "config": config_to_dict(config),
                        "classes": list(classes.names), "steps": steps}, tmp)
        scores, ms, example_labels[name] = _evaluate(model, val_volumes, picks, examples, classes, c.batch_size, device)
        results[name] = {**scores, "steps": steps, "train_seconds": seconds, "infer_ms_per_slice": ms,
                         "parameters": sum(p.numel() for p in model.parameters())}
        log(f"{name}: {steps} steps in {seconds:.0f} s; mean Dice {scores['dice']:.4f}")
        del model

    write_csv(run_dir / "results.csv", results)
    with atomic_output(run_dir / "results.md") as tmp:
        tmp.write_text(_summary(config, split, picks, classes, results))
    if examples:
        truths = [semantic_target(val_volumes[v].label[..., z], classes) for v, z in examples]
        write_examples(run_dir / "examples.png", [val_volumes[v].image[..., z] for v, z in examples], truths,
                       example_labels, classes.num_classes)
    log(markdown_table(results))
    log(f"results: {run_dir / 'results.md'}")
    return run_dir
