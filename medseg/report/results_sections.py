"""The sections of the results page, one renderer per kind of run: training runs side by side, a
``medseg compare`` folder, the nnU-Net peer benchmark, an ensemble benchmark, the large-CT benchmark and
the pretraining protocol.
Each returns its Markdown and the figures the README's table shows."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import MedsegError
from medseg.report.run_files import NEAR_STEP, RunFigures, crops_per_step, dice_at_step, read_json, run_figures
from medseg.report.runs import read_run

LEARNED_NOTHING = 0.05  # a mean Dice under this after a budget: the method learned nothing in it


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _steps_words(steps: int, mean_dice: float) -> str:
    return f"{steps} steps" + (", learned nothing at this budget" if mean_dice < LEARNED_NOTHING else "")


def learned_nothing_note(label: str, mean_dice: float, steps: int, seconds_per_step: float) -> str | None:
    if mean_dice >= LEARNED_NOTHING:
        return None
    return (f"**{label} learned nothing at this budget** (mean Dice {mean_dice:.3f}): {steps} optimiser steps at "
            f"{seconds_per_step:.2f} s/step ({1 / seconds_per_step:.2f} steps/s). The figure measures the budget, "
            "not the method.")


@dataclass
class Section:
    """One section of the results page and its line in the README's table."""

    title: str
    body: str
    headline: list[str]  # its figures in the README's table
    short_title: str
    short_budget: str


def _check_budget(spec: dict[str, Any], what: str, minutes: float | None) -> None:
    """A section's stated minutes must be what the run was given (``train.max_minutes``)."""
    if spec.get("minutes") is not None and minutes != spec["minutes"]:
        raise MedsegError(f"{spec['title']}: {what} has train.max_minutes {minutes}, the section says "
                          f"{spec['minutes']}")


def _runs_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    runs = [run_figures(label, root / folder) for label, folder in spec["runs"].items()]
    for run in runs:
        _check_budget(spec, f"run '{run.label}'", run.budget_minutes)
    classes = list(runs[0].dice)
    rows = [[name] + [_number(run.dice.get(name)) for run in runs] for name in classes]
    rows.append(["**mean Dice**"] + [f"**{run.mean_dice:.3f}**" for run in runs])
    rows.append(["mean HD95 (mm)"] + [_number(run.mean_hd95, 2) for run in runs])
    rows.append(["held-out cases"] + [str(run.cases) for run in runs])
    rows.append(["optimiser steps"] + [str(run.steps) for run in runs])
    rows.append(["samples seen"] + [str(run.samples) for run in runs])
    rows.append(["minutes (training and validation)"] + [f"{run.minutes:.1f}" for run in runs])
    rows.append(["s/step"] + [f"{run.seconds_per_step:.2f}" for run in runs])
    notes = []
    if len(runs) > 1:
        common = min(run.steps for run in runs)
        points = [dice_at_step(run, common) for run in runs]
        rows.append([f"validation Dice during training at <= {common} steps (at step)"]
                    + [f"{p[1]:.3f} ({p[0]})" if p else "-" for p in points])
        notes.append(f"The last row compares the runs at an equal number of steps: {common} is the fewest any "
                     "run made, and each is shown at its last validation up to there (on the preprocessed "
                     "grid, so it differs from the held-out scores above).")
        for run, point in zip(runs, points):
            if point is None:
                steps = ", ".join(str(step) for step, _ in run.curve)
                notes.append(f"{run.label} has no figure at {common} steps: it validated at steps {steps} only.")
    body = table(["class"] + [run.label for run in runs], rows)
    notes += [note for run in runs
              if (note := learned_nothing_note(run.label, run.mean_dice, run.steps, run.seconds_per_step))]
    headline = [f"{run.label}: mean Dice {run.mean_dice:.3f} ({_steps_words(run.steps, run.mean_dice)})"
                for run in runs]
    return "\n\n".join([body, *notes]), headline


def _read_columns(path: Path) -> dict[str, dict[str, str]]:
    """A ``medseg compare`` table: metric -> model -> value."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return {row["metric"]: {k: v for k, v in row.items() if k != "metric"} for row in csv.DictReader(handle)}
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None


def _compare_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    folder = root / spec["folder"]
    minutes = (yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")).get("train") or {}).get(
        "max_minutes")
    _check_budget(spec, "the run", minutes)
    end = _read_columns(folder / "results.csv")
    models = spec.get("models") or list(next(iter(end.values())))
    for values in end.values():
        for model in models:
            if model not in values:
                raise MedsegError(f"{folder / 'results.csv'}: no model '{model}'")
    equal_path = folder / "results_equal_steps.csv"
    equal = _read_columns(equal_path) if equal_path.is_file() else {}

    def steps_of(columns: dict[str, dict[str, str]], model: str) -> int:
        return int(float(columns["steps"][model]))

    def s_per_step(model: str) -> float:
        if "s_per_step" in end and end["s_per_step"][model]:
            return float(end["s_per_step"][model])
        return float(end["train_seconds"][model]) / steps_of(end, model)

    shown = [m for m in spec.get("metrics", []) if m in end]
    header = ["metric"] + [f"{m}, end" for m in models]
    if equal:
        header += [f"{m} at {steps_of(equal, m)} steps" for m in models]
    def cell(columns: dict[str, dict[str, str]], metric: str, model: str) -> str:
        value = columns.get(metric, {}).get(model)
        if not value:
            return "-"
        if metric in ("steps", "samples_seen"):
            return str(int(float(value)))
        if metric == "parameters":
            return f"{float(value) / 1e6:.1f} M"
        return _number(float(value), 2 if metric == "s_per_step" else 1 if metric.startswith("infer_ms") else 3)

    rows = []
    for metric in [*shown, "steps", "samples_seen", "s_per_step", "parameters"]:
        cells = [metric.replace("_", " ")] + [cell(end, metric, m) for m in models]
        if metric == "s_per_step" and "s_per_step" not in end:
            cells = ["s per step"] + [f"{s_per_step(m):.2f}" for m in models]
        if metric == "samples_seen" and "samples_seen" not in end and spec.get("batch_size"):
            cells = ["samples seen"] + [str(steps_of(end, m) * spec["batch_size"]) for m in models]
        if equal:
            cells += [cell(equal, metric, m) for m in models]
        rows.append(cells)
    notes = [note for m in models
             if (note := learned_nothing_note(m, float(end["dice"][m]), steps_of(end, m), s_per_step(m)))]
    headline = [f"{m}: " + ", ".join(f"{k} {_number(float(end[k][m]))}" for k in spec["headline"]
                                     if end.get(k, {}).get(m))
                + f" ({_steps_words(steps_of(end, m), float(end['dice'][m]))})" for m in models]
    return "\n\n".join([table(header, rows), *notes]), headline


def _peer_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    rows, notes, headline = [], [], []
    nnunet_runs: list[tuple[float, int, dict[int, float]]] = []  # budget, steps, iterations -> pseudo Dice
    medseg_curve: list[tuple[int, float]] = []  # steps -> medseg's held-out Dice
    for folder in spec["folders"]:
        result = read_json(root / folder / "peer_results.json")
        medseg_config = root / folder / "medseg_run" / "config.yaml"
        curves = result.get("curves", {})
        pseudo = {int(p["iterations"]): float(p["mean_pseudo_dice"]) for p in curves.get("nnunet_pseudo_dice", [])}
        nnunet_runs += [(row["budget_min"], row["steps"], pseudo) for row in result["rows"]
                        if row["method"] != "medseg" and row["tta"] == "mirroring"]
        if curves.get("medseg_val_dice"):
            per_epoch = int((yaml.safe_load(medseg_config.read_text(encoding="utf-8")).get("train") or {})
                            ["iterations_per_epoch"])
            medseg_curve = [((int(p["epoch"]) + 1) * per_epoch, float(p["mean_dice"]))
                            for p in curves["medseg_val_dice"]]
        for row in result["rows"]:
            seconds_per_step = row["train_loop_s"] / row["steps"]
            per_step = (crops_per_step(yaml.safe_load(medseg_config.read_text(encoding="utf-8")))
                        if row["method"] == "medseg" else row["batch_size"])
            rows.append([f"{row['budget_min']:g} min", row["method"], row["tta"]]
                        + [_number(row["dice"][name]) for name in result["class_names"][1:]]
                        + [f"**{row['mean_dice']:.3f}**", str(row["epochs"]), str(row["steps"]),
                           str(row["steps"] * per_step), f"{seconds_per_step:.2f}",
                           f"{row['predict_s_per_case']:.2f}", str(row["cases"])])
            label = f"{row['method']} ({row['tta']}), {row['budget_min']:g} min"
            note = learned_nothing_note(label, row["mean_dice"], row["steps"], seconds_per_step)
            if note and note not in notes:
                notes.append(note)
            if row["tta"] == "mirroring":
                headline.append(f"{row['method'].split()[0]}, {row['budget_min']:g} min: mean Dice "
                                f"{row['mean_dice']:.3f} ({_steps_words(row['steps'], row['mean_dice'])})")
    header = (["budget", "method", "test-time mirroring"] + result["class_names"][1:]
              + ["mean Dice", "epochs", "steps", "samples seen", "s/step", "predict s/case", "held-out cases"])
    parts = [table(header, rows), *notes]
    if medseg_curve and nnunet_runs:
        equal_rows = []
        for budget, steps, pseudo in nnunet_runs:
            ours = [point for point in medseg_curve if NEAR_STEP * steps <= point[0] <= steps]
            if ours and steps in pseudo:
                equal_rows.append([f"{steps} (nnU-Net's {budget:g} min)", f"{ours[-1][1]:.3f} (step {ours[-1][0]})",
                                   f"{pseudo[steps]:.3f}"])
        if equal_rows:
            parts.append("At an equal number of steps, from the training curves (validation without mirroring; "
                         "medseg's on the held-out cases, nnU-Net's pseudo Dice on the validation subset it "
                         "takes from its training cases, so the two are not the same measurement):\n\n"
                         + table(["steps", "medseg, held-out Dice", "nnU-Net, pseudo Dice"], equal_rows))
    return "\n\n".join(parts), headline


def _ensemble_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    folder = root / spec["folder"]
    folds = sorted(path.name for path in (folder / "folds").iterdir() if path.is_dir())
    members = [run_figures(name, folder / "folds" / name, folder / "scores" / name / "metrics.json")
               for name in folds]
    for run in members:
        _check_budget(spec, f"fold '{run.label}'", run.budget_minutes)
    ensemble = read_json(folder / "scores" / "ensemble" / "metrics.json")
    classes = list(members[0].dice)
    rows = [[run.label] + [_number(run.dice[c]) for c in classes]
            + [f"{run.mean_dice:.3f}", str(run.steps), str(run.samples), f"{run.seconds_per_step:.2f}"]
            for run in members]
    fold_means = [run.mean_dice for run in members]
    average = sum(fold_means) / len(fold_means)
    spread = math.sqrt(sum((v - average) ** 2 for v in fold_means) / len(fold_means))
    rows.append([f"ensemble of {len(members)}"] + [_number(ensemble["per_class"][c]["dice"]) for c in classes]
                + [f"**{ensemble['mean_dice']:.3f}**", "-", "-", "-"])
    body = table(["model"] + classes + ["mean Dice", "steps", "samples seen", "s/step"], rows)
    summary = (f"Single folds: mean Dice {average:.3f} ± {spread:.3f} (standard deviation over folds); ensemble "
               f"{ensemble['mean_dice']:.3f}, on {ensemble['num_cases']} held-out cases no fold trained on.")
    return body + "\n\n" + summary, [f"ensemble mean Dice {ensemble['mean_dice']:.3f}, single folds {average:.3f}"]


def _large_ct_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    result = read_json(root / spec["folder"] / "results.json")
    stages = ("read", "preprocess", "network", "resample", "write")
    rows = [[f"512x512x{case['slices']}", case["name"], f"{case['seconds']:.1f}", f"{case['peak_gb']:.2f}"]
            + [_number(case["stages"].get(stage), 1) for stage in stages]
            + [f"{case['end_to_end']:.2f}x" if case["end_to_end"] else "-"] for case in result["cases"]]
    body = table(["scan", "what", "seconds", "peak GB"] + [f"{s} s" for s in stages]
                 + ["end to end / (read + network + write)"], rows)
    notes = [f"Model: {result['model']}."]
    if result.get("prefetch"):
        gain = result["prefetch"]
        notes.append(f"Reading ahead: a folder of {gain['scans']} 512x512x280 scans took "
                     f"{gain['seconds_without']:.1f} s without and {gain['seconds_with']:.1f} s with prefetching "
                     f"({gain['gain']:.2f}x; mean of two runs each, alternating).")
    largest = max(result["cases"], key=lambda case: (case["slices"], "ensemble" in case["name"]))
    headline = [f"{largest['slices']} slices, {largest['name'].split(',')[1].strip()}: {largest['seconds']:.0f} s, "
                f"peak {largest['peak_gb']:.2f} GB"]
    return "\n\n".join([body, *notes]), headline


def mean_and_spread(values: list[float]) -> str:
    """Mean ± sample standard deviation, as the pretraining protocol reports its arms."""
    if len(values) < 2:
        return _number(values[0]) if values else "-"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


SSL_ARMS = {"scratch": "from scratch", "pretrained": "pretrained"}


def _ssl_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    """A ``medseg.benchmark.ssl`` folder: each seed's two fine-tunes, their spread, the validation Dice of
    each arm by steps (mean over seeds), and what the pretraining run did."""
    folder = root / spec["folder"]
    seeds = sorted(int(path.name.removeprefix("scratch_seed")) for path in folder.glob("scratch_seed*")
                   if path.is_dir())
    if not seeds:
        raise MedsegError(f"{folder}: no fine-tuning runs (scratch_seed*) to report")
    runs: dict[str, dict[int, RunFigures]] = {
        arm: {seed: run_figures(f"{label} seed {seed}", folder / f"{arm}_seed{seed}") for seed in seeds}
        for arm, label in SSL_ARMS.items()}
    rows = []
    for seed in seeds:
        scratch, pretrained = runs["scratch"][seed], runs["pretrained"][seed]
        rows.append([str(seed), f"{scratch.mean_dice:.3f}", f"{pretrained.mean_dice:.3f}",
                     f"{pretrained.mean_dice - scratch.mean_dice:+.3f}", str(scratch.steps), str(scratch.samples),
                     f"{scratch.seconds_per_step:.2f} / {pretrained.seconds_per_step:.2f}"])
    means = {arm: [runs[arm][seed].mean_dice for seed in seeds] for arm in SSL_ARMS}
    differences = [p - s for p, s in zip(means["pretrained"], means["scratch"])]
    rows.append(["**mean ± std**", f"**{mean_and_spread(means['scratch'])}**",
                 f"**{mean_and_spread(means['pretrained'])}**", f"**{mean_and_spread(differences)}**", "", "", ""])
    body = table(["seed", "from scratch", "pretrained", "difference", "steps", "samples seen",
                  "s/step (scratch / pretrained)"], rows)
    steps = sorted({step for arm in SSL_ARMS for run in runs[arm].values() for step, _ in run.curve})
    curve_rows = []
    for step in steps:
        cells = []
        for arm in SSL_ARMS:
            values = [dict(run.curve)[step] for run in runs[arm].values() if step in dict(run.curve)]
            cells.append(mean_and_spread(values))
        curve_rows.append([str(step), *cells])
    curve = ("Validation mean Dice during fine-tuning by optimiser steps (mean ± std over the seeds; on the "
             "preprocessed grid, so it differs from the held-out scores above):\n\n"
             + table(["steps", *SSL_ARMS.values()], curve_rows))
    parts = [body, curve]
    pretraining = folder / "pretraining"
    if (pretraining / "train_log.jsonl").is_file():
        record = read_run(pretraining)
        _check_budget(spec, "the pretraining run", (record.config.get("train") or {}).get("max_minutes"))
        last = record.log[-1]
        validated = [row for row in record.log if "val_loss" in row] or [last]
        ends = {"train": (record.log[0], last), "val": (validated[0], validated[-1])}
        losses = [key for key in {**validated[-1], **last} if key.startswith(("train_loss", "val_loss"))]
        parts.append(f"Pretraining: {last['step']} steps, {last['samples_seen']} sub-volumes, "
                     f"{last['elapsed_min']:.1f} minutes ({last['elapsed_min'] * 60 / last['step']:.2f} s/step).\n\n"
                     + table(["loss", "first epoch", "last epoch"],
                             [[key.replace("_", " ")] + [_number(row.get(key)) for row in ends[key.split("_")[0]]]
                              for key in losses]))
    probes = folder / "probe.json"
    if probes.is_file():  # medseg.benchmark.ssl_probe's linear probes of the frozen encoder
        names = (read_run(folder / f"scratch_seed{seeds[0]}").config.get("data") or {}).get("class_names") or []
        rows = [[arm, *(_number(d) for d in probe["class_dice"]), f"**{_number(probe['mean_dice'])}**"]
                for arm, probe in read_json(probes).items()]
        parts.append(f"Linear probes of the frozen encoder (one 1x1x1 convolution on every stage's features, "
                     f"fitted on seed {seeds[0]}'s fine-tuning cases), held-out Dice:\n\n"
                     + table(["encoder", *names[1:], "mean Dice"], rows))
    headline = [f"pretrained {mean_and_spread(means['pretrained'])} against scratch "
                f"{mean_and_spread(means['scratch'])} ({len(seeds)} seeds, {runs['scratch'][seeds[0]].steps} steps)"]
    return "\n\n".join(parts), headline


RENDERERS: dict[str, Callable[[dict[str, Any], Path], tuple[str, list[str]]]] = {
    "runs": _runs_section, "compare2d": _compare_section, "nnunet_peer": _peer_section,
    "ensemble": _ensemble_section, "large_ct": _large_ct_section, "ssl": _ssl_section,
}
REQUIRED = ("title", "kind", "command", "machine", "budget")
