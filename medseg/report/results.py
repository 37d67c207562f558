"""The results page (``docs/results.md``) and the README's short table, written from the run folders they
report on, so that no figure is typed by hand and none can drift from its run.

    python -m medseg.report.results keep RUN_FOLDER docs/runs/NAME   # the run's small files, no weights
    python -m medseg.report.results write docs/results.yaml          # docs/results.md and the README table

``docs/results.yaml`` lists the sections: a title, the command that made the runs, the machine, the
budget in minutes and where the runs' files are kept. Every section must say its budget, machine and
command; the budget is checked against each run's own config. Equal-budget comparisons get steps,
samples seen and seconds per step beside every figure, and each method's validation Dice at the
largest step count all of them reached. A method whose mean Dice stays under ``LEARNED_NOTHING`` is
reported as having learned nothing at that budget, with its steps per second.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.report.runs import read_run

LEARNED_NOTHING = 0.05
KEPT_FILES = ("config.yaml", "plan.yaml", "split.json", "train_log.jsonl", "validation/metrics.json",
              "results.csv", "results_equal_steps.csv", "results.json", "peer_results.json")
KEPT_PATTERNS = ("scores/*/metrics.json", "*/config.yaml", "*/plan.yaml", "*/split.json", "*/train_log.jsonl",
                 "*/validation/metrics.json", "folds/*/config.yaml", "folds/*/train_log.jsonl")
README_START = "<!-- results: written by python -m medseg.report.results; do not edit -->"
README_END = "<!-- end of results -->"


def keep_run(source: Path, target: Path) -> list[Path]:
    """Copy the small files of a run folder (configs, logs, scores; never weights or predictions)."""
    if not source.is_dir():
        raise MedsegError(f"{source}: run folder not found")
    if target.exists():
        raise MedsegError(f"{target}: already exists; keep a run under a new name")
    files = [source / name for name in KEPT_FILES if (source / name).is_file()]
    files += [path for pattern in KEPT_PATTERNS for path in sorted(source.glob(pattern)) if path.is_file()]
    if not files:
        raise MedsegError(f"{source}: no run files (config.yaml, train_log.jsonl, results) to keep")
    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    return files


# ---------------------------------------------------------------------------------------------------------------
# What one training run folder says


@dataclass
class RunFigures:
    """A training run's held-out scores and what its budget bought."""

    label: str
    dice: dict[str, float]  # class -> held-out Dice
    mean_dice: float
    mean_hd95: float | None
    cases: int
    steps: int
    samples: int
    minutes: float  # training and validation wall time
    budget_minutes: float | None
    curve: list[tuple[int, float]]  # (step, validation mean Dice during training)

    @property
    def seconds_per_step(self) -> float:
        return self.minutes * 60 / self.steps if self.steps else math.nan


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None
    except json.JSONDecodeError:
        raise MedsegError(f"{path}: not valid JSON") from None


def crops_per_step(config: dict[str, Any]) -> int:
    """Training samples in one optimiser step: the batch's images times the crops taken from each."""
    return int((config.get("train") or {}).get("batch_size", 0)) * int(
        (config.get("data") or {}).get("samples_per_volume", 1))


def run_figures(label: str, folder: Path, scores: Path | None = None) -> RunFigures:
    """Held-out scores (``validation/metrics.json`` or ``scores``) and the budget columns of a run folder.

    Logs written before the Trainer recorded steps give them as epochs x iterations per epoch, which is
    what the Trainer runs (a time limit is checked between epochs)."""
    run = read_run(folder)
    if not run.log:
        raise MedsegError(f"{folder / 'train_log.jsonl'}: empty; the run trained no epoch")
    train = run.config.get("train") or {}
    last = run.log[-1]
    steps = int(last.get("step", (last["epoch"] + 1) * train.get("iterations_per_epoch", 0)))
    samples = int(last.get("samples_seen", steps * crops_per_step(run.config)))
    metrics = _read_json(scores or folder / "validation" / "metrics.json")
    dice = {name: float(values["dice"]) for name, values in metrics["per_class"].items()}
    curve = []
    for row in run.log:
        if "val_mean_dice" in row:
            step = int(row.get("step", (row["epoch"] + 1) * train.get("iterations_per_epoch", 0)))
            curve.append((step, float(row["val_mean_dice"])))
    return RunFigures(label, dice, float(metrics["mean_dice"]), metrics.get("mean_hd95"), int(metrics["num_cases"]),
                      steps, samples, float(last["elapsed_min"]), train.get("max_minutes"), curve)


NEAR_STEP = 0.75  # a validation counts as "at" a step count when it is at least this fraction of it


def dice_at_step(run: RunFigures, step: int) -> tuple[int, float] | None:
    """The last validation during training at or before ``step``, if it is near it (none: the run did not
    validate between ``NEAR_STEP * step`` and ``step``)."""
    earlier = [point for point in run.curve if NEAR_STEP * step <= point[0] <= step]
    return earlier[-1] if earlier else None


# ---------------------------------------------------------------------------------------------------------------
# Markdown


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _anchor(title: str) -> str:
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


def _runs_section(spec: dict[str, Any], root: Path) -> tuple[str, list[str]]:
    runs = [run_figures(label, root / folder) for label, folder in spec["runs"].items()]
    for run in runs:
        if spec.get("minutes") is not None and run.budget_minutes != spec["minutes"]:
            raise MedsegError(f"{spec['title']}: run '{run.label}' has train.max_minutes {run.budget_minutes}, "
                              f"the section says {spec['minutes']}")
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
                notes.append(f"{run.label} has no figure at {common} steps: it validated at steps {steps} only "
                             "(validation is scheduled by time, and its epochs are long).")
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
    if spec.get("minutes") is not None and minutes != spec["minutes"]:
        raise MedsegError(f"{spec['title']}: the run has train.max_minutes {minutes}, the section says "
                          f"{spec['minutes']}")
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
        result = _read_json(root / folder / "peer_results.json")
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
        if spec.get("minutes") is not None and run.budget_minutes != spec["minutes"]:
            raise MedsegError(f"{spec['title']}: fold '{run.label}' has train.max_minutes {run.budget_minutes}, "
                              f"the section says {spec['minutes']}")
    ensemble = _read_json(folder / "scores" / "ensemble" / "metrics.json")
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
    result = _read_json(root / spec["folder"] / "results.json")
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


RENDERERS: dict[str, Callable[[dict[str, Any], Path], tuple[str, list[str]]]] = {
    "runs": _runs_section, "compare2d": _compare_section, "nnunet_peer": _peer_section,
    "ensemble": _ensemble_section, "large_ct": _large_ct_section,
}
REQUIRED = ("title", "kind", "command", "machine", "budget")


def _recorded_provenance(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """The section with the command, machine and date its benchmark recorded in ``results.json`` (see
    ``medseg.benchmark.machine.provenance``) wherever the section does not say them itself."""
    recorded = root / spec.get("folder", "") / "results.json" if spec.get("folder") else None
    if recorded is None or not recorded.is_file():
        return spec
    result = _read_json(recorded)
    filled = dict(spec)
    if not filled.get("command") and result.get("command"):
        filled["command"] = result["command"]
    if not filled.get("machine") and result.get("machine"):
        filled["machine"] = f"{result['machine']}; {result['date']}" if result.get("date") else result["machine"]
    return filled


def render_section(spec: dict[str, Any], root: Path) -> Section:
    """One section; refused unless it says, or its run recorded, its budget, machine and command."""
    spec = _recorded_provenance(spec, root)
    missing = [key for key in REQUIRED if not spec.get(key)]
    if missing:
        raise MedsegError(f"results section '{spec.get('title', '?')}': no {', '.join(missing)}")
    if spec["kind"] not in RENDERERS:
        raise MedsegError(f"results section '{spec['title']}': unknown kind '{spec['kind']}' "
                          f"(one of {', '.join(RENDERERS)})")
    body, headline = RENDERERS[spec["kind"]](spec, root)
    parts = [f"## {spec['title']}",
             f"**Budget:** {spec['budget']}  \n**Machine:** {spec['machine']}",
             "```\n" + spec["command"].strip() + "\n```",
             spec["about"].strip() if spec.get("about") else "", body,
             spec["conclusion"].strip() if spec.get("conclusion") else ""]
    return Section(spec["title"], "\n\n".join(p for p in parts if p), headline,
                   spec.get("short_title") or spec["title"], spec.get("short_budget") or spec["budget"])


def results_page(manifest: dict[str, Any], root: Path) -> tuple[str, str]:
    """The results page and the README's short table (with links into the page)."""
    sections = [render_section(spec, root) for spec in manifest["sections"]]
    contents = "\n".join(f"- [{s.title}](#{_anchor(s.title)})" for s in sections)
    page = "\n\n".join([f"# {manifest['title']}", manifest["intro"].strip(), contents]
                       + [s.body for s in sections]) + "\n"
    link = manifest.get("page_link", "docs/results.md")
    rows = [[f"[{s.short_title}]({link}#{_anchor(s.title)})", "; ".join(s.headline), s.short_budget]
            for s in sections]
    short = table(["result", "figure", "budget"], rows)
    return page, short


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise MedsegError(f"{path}: cannot read ({error.strerror or error})") from None
    except yaml.YAMLError:
        raise MedsegError(f"{path}: not valid YAML") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("sections"), list):
        raise MedsegError(f"{path}: not a results manifest (a mapping with a 'sections' list)")
    return manifest


def replace_readme_table(readme: str, short: str) -> str:
    """The README with the text between its results markers replaced by ``short``."""
    if README_START not in readme or README_END not in readme:
        raise MedsegError(f"README: no results markers ({README_START} ... {README_END})")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{short}\n{README_END}{tail}"


def write_results(manifest_path: Path) -> tuple[Path, Path]:
    """Write the page and the README table named in the manifest; nothing is written if a run is unreadable."""
    manifest = read_manifest(manifest_path)
    root = manifest_path.parent
    page, short = results_page(manifest, root)
    page_path = root / manifest.get("page", "results.md")
    readme_path = root / manifest.get("readme", "../README.md")
    readme = replace_readme_table(readme_path.read_text(encoding="utf-8"), short)
    for path, text in ((page_path, page), (readme_path, readme)):
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return page_path, readme_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg.report.results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    keep = commands.add_parser("keep", help="copy a run folder's small files (no weights) for the results page")
    keep.add_argument("source", type=Path)
    keep.add_argument("target", type=Path)
    write = commands.add_parser("write", help="write the results page and the README table from the manifest")
    write.add_argument("manifest", type=Path, nargs="?", default=Path("docs/results.yaml"))
    args = parser.parse_args(argv)
    try:
        if args.command == "keep":
            print(f"kept {len(keep_run(args.source, args.target))} files in {args.target}")
        else:
            page, readme = write_results(args.manifest)
            print(f"wrote {page} and the results table of {readme}")
    except MedsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
