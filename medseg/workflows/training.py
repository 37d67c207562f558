"""``medseg train``: config + dataset -> planned config, split, loaders, Trainer, run folder.

Everything that can fail on user input (config keys and values, dataset layout, headers, the network,
the optimizer, unreadable or out-of-range files met while caching) fails before the run folder is created.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from monai.data import DataLoader

from medseg.config import Config
from medseg.data.datasets import Case, loader_items
from medseg.data.transforms import AnnotatedClassesd, preprocessing
from medseg.engine.loaders import make_loaders
from medseg.engine.run_folder import is_main_process, open_run_folder, rank_zero_log
from medseg.engine.trainer import Trainer, distributed_device
from medseg.evaluation import evaluate_cases, format_table
from medseg.inference import Predictor
from medseg.io import atomic_output
from medseg.planning.planner import Device
from medseg.ssl.transfer import load_pretrained_encoder
from medseg.strategies import Segmenter, build_segmenter
from medseg.workflows.preparation import prepare_labelled_run, resume_labelled_run


def segmentation_loaders(config: Config, segmenter: Segmenter, train_cases: list[Case],
                         val_cases: list[Case]) -> tuple[DataLoader, DataLoader]:
    """Training samples drawn by the strategy, and whole validation volumes on the strategy's grid."""
    deterministic = preprocessing(config.data)
    if config.data.partial_classes:
        deterministic.append(AnnotatedClassesd(config.data.class_names or [], config.data.partial_classes))
    deterministic += segmenter.grid_transforms(with_label=True)
    return make_loaders(config, loader_items(train_cases), loader_items(val_cases),
                        deterministic + segmenter.train_sampling(), deterministic)


def _final_validation(config: Config, run_dir: Path, device: torch.device, val_cases: list[Case],
                      log: Callable[[str], None]) -> None:
    """Predict the validation cases as ``medseg infer`` would and score them in their own geometry, with
    the weights at the end of training: ``best.pt`` was chosen on these same cases, so its score on them
    would be biased upwards."""
    predictor = Predictor(run_dir, device=device.type, checkpoint="last.pt")
    pred_dir = run_dir / "validation" / "predictions"
    predictor.predict_files([c.image for c in val_cases], pred_dir, overwrite=True, progress=config.train.progress,
                            log=log)
    evaluation = evaluate_cases(
        [(c.case_id, pred_dir / f"{c.case_id}.nii.gz", c.label) for c in val_cases if c.label is not None],
        class_names=dict(enumerate((config.data.class_names or [])[1:], start=1)),
        output_json=run_dir / "validation" / "metrics.json",
        partial_classes=config.data.partial_classes,
    )
    log("validation cases, original geometry:\n" + format_table(evaluation))


def train(
    config_path: str | Path | None,
    data_dir: str | Path | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    overrides: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Train a model; returns the run folder (config.yaml, split.json, best.pt, last.pt, logs)."""
    overrides = list(overrides or [])
    device = distributed_device()
    log = rank_zero_log(log)
    plan_for: Device = "cuda" if device.type == "cuda" else "cpu"
    run = (resume_labelled_run("train", output, overrides) if resume
           else prepare_labelled_run("train", config_path, data_dir, output, overrides, plan_for=plan_for))
    config, split, run_dir = run.config, run.split, run.run_dir
    torch.manual_seed(config.train.seed)
    segmenter = build_segmenter(config)
    if config.model.pretrained and not resume:  # a resumed run has the weights in its checkpoint
        log(str(load_pretrained_encoder(segmenter.network, config.model.pretrained)))
    train_cases, val_cases = run.part("train"), run.part("validation")
    log(f"{len(train_cases)} training and {len(val_cases)} validation cases; caching preprocessed volumes")
    train_loader, val_loader = segmentation_loaders(config, segmenter, train_cases, val_cases)
    trainer = Trainer(segmenter, config, run_dir, train_loader, val_loader, device)
    hooks = open_run_folder(run_dir, config, split, log)
    if run.plan_text is not None and is_main_process():
        with atomic_output(run_dir / "plan.yaml") as tmp:
            tmp.write_text(run.plan_text, encoding="utf-8")
        log(f"planned from the training cases: {run_dir / 'plan.yaml'}")
        if run.coupled_unplanned:
            log("not planned, because they go with a value you set; these apply: "
                + ", ".join(run.coupled_unplanned))
    result = trainer.fit(hooks, resume=resume, log=log)
    log(f"best validation mean Dice {result.best_metric:.4f} at epoch {result.best_epoch} "
        f"({result.epochs_run} epochs, {result.elapsed_s / 60:.1f} min)")
    if config.train.final_validation and is_main_process():
        _final_validation(config, run_dir, device, val_cases, log)
    return run_dir
