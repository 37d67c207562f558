"""``medseg report``: one self-contained HTML page, with its PNGs beside it, for one or more runs.

The page has no scripts, fonts or styles from elsewhere, so it opens offline and on an air-gapped
cluster. With several runs every section puts them side by side, and one plot overlays their curves.
"""

from __future__ import annotations

import html
import math
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from medseg.data.datasets import Case, discover_dataset
from medseg.errors import MedsegError
from medseg.report import plots
from medseg.report.runs import PREDICTIONS, RunRecord, read_run

STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
.runs{display:flex;gap:1.5em;flex-wrap:wrap}.run{flex:1;min-width:420px}img{max-width:100%}
table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}pre{background:#f6f6f6;padding:.6em;font-size:80%;overflow:auto}
.note{color:#666;font-size:90%}"""


def _slug(index: int, run: RunRecord) -> str:
    return f"run{index}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", run.name)[:60]


def _number(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not math.isnan(value) else "–"


def _summary(runs: list[RunRecord]) -> str:
    """One row per run: strategy, budget spent and the validation figures."""
    head = ("<tr><th>run</th><th>strategy</th><th>steps</th><th>samples seen</th><th>minutes</th>"
            "<th>best val. mean Dice (log)</th><th>final validation: mean over cases of each case's mean Dice</th>"
            "<th>cases</th></tr>")
    rows = []
    for run in runs:
        last = run.log[-1] if run.log else {}
        logged = [row["val_mean_dice"] for row in run.log if isinstance(row.get("val_mean_dice"), (int, float))]
        means = [run.mean_dice(case) for case in run.case_dice]
        final = statistics.fmean([m for m in means if not math.isnan(m)]) if means else math.nan
        strategy = (run.config.get("model") or {}).get("strategy", "")
        cells = [html.escape(run.name), html.escape(str(strategy)), str(last.get("step", "–")),
                 str(last.get("samples_seen", "–")), _number(last.get("elapsed_min"), 1),
                 _number(max(logged) if logged else math.nan), _number(final), str(len(run.case_dice))]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _class_table(run: RunRecord) -> str:
    """Mean and spread of the per-case Dice for each class."""
    if not run.case_dice:
        return '<p class="note">No final validation scores (validation/metrics.csv) in this run.</p>'
    rows = []
    for name in run.class_names or sorted({c for s in run.case_dice.values() for c in s}):
        values = [s[name] for s in run.case_dice.values() if not math.isnan(s.get(name, math.nan))]
        spread = statistics.pstdev(values) if len(values) > 1 else math.nan
        mean = statistics.fmean(values) if values else math.nan
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_number(mean)}</td><td>{_number(spread)}</td>"
                    f"<td>{len(values)}</td></tr>")
    return ("<table><tr><th>class</th><th>mean Dice</th><th>std</th><th>cases</th></tr>"
            + "".join(rows) + "</table>")


def _validation_cases(run: RunRecord) -> tuple[dict[str, Case], str]:
    """The run's dataset cases by id, or none and why (a dataset moved or deleted since training)."""
    root = (run.config.get("data") or {}).get("root")
    if not root:
        return {}, "the config names no dataset (data.root)"
    try:
        dataset = discover_dataset(root, require_labels=False)
    except MedsegError as error:
        return {}, f"the dataset cannot be read any more ({error})"
    return {case.case_id: case for case in dataset.cases}, ""


def _overlays(run: RunRecord, slug: str, folder: Path) -> str:
    """Best, median and worst validation cases by mean Dice, in three planes."""
    scored = sorted((m, case) for case in run.case_dice if not math.isnan(m := run.mean_dice(case)))
    if not scored:
        return '<p class="note">No scored validation cases to show.</p>'
    cases, problem = _validation_cases(run)
    if problem:
        return f'<p class="note">No overlays: {html.escape(problem)}.</p>'
    picks = {"worst": scored[0], "median": scored[len(scored) // 2], "best": scored[-1]}
    parts = []
    for rank, (mean, case_id) in picks.items():
        prediction = run.folder / PREDICTIONS / f"{case_id}.nii.gz"
        case = cases.get(case_id)
        if case is None or not prediction.is_file():
            parts.append(f'<p class="note">{rank}: {html.escape(case_id)} (image or prediction missing)</p>')
            continue
        name = f"{slug}_overlay_{rank}.png"
        plots.overlay(case.image, case.label, prediction, run.class_names,
                      f"{rank}: {case_id}, mean Dice {mean:.3f}", folder / name)
        parts.append(f'<img src="{name}" alt="{rank} case {html.escape(case_id)}">')
    return "".join(parts)


def _section(title: str, runs: list[RunRecord], body: Callable[[int, RunRecord], str]) -> str:
    columns = "".join(f'<div class="run"><h3>{html.escape(run.name)}</h3>{body(i, run)}</div>'
                      for i, run in enumerate(runs))
    return f"<h2>{html.escape(title)}</h2><div class=\"runs\">{columns}</div>"


def _page(runs: list[RunRecord], folder: Path) -> str:
    slugs = [_slug(i, run) for i, run in enumerate(runs)]
    for slug, run in zip(slugs, runs):
        plots.training_curves(run, folder / f"{slug}_curves.png")
        if run.case_dice:
            plots.case_dice(run, folder / f"{slug}_case_dice.png")
    parts = [f"<h1>medseg report: {html.escape(', '.join(run.name for run in runs))}</h1>", _summary(runs)]
    if len(runs) > 1:
        plots.compared_curves(runs, folder / "compared_curves.png")
        parts.append('<h2>Runs compared</h2><img src="compared_curves.png" alt="mean validation Dice of every run">')
    parts.append(_section("Training curves", runs, lambda i, r: (
        f'<img src="{slugs[i]}_curves.png" alt="training curves of {html.escape(r.name)}">')))
    parts.append(_section("Per-case Dice (final validation, original geometry)", runs, lambda i, r: (
        f'<img src="{slugs[i]}_case_dice.png" alt="per-case Dice of {html.escape(r.name)}">' if r.case_dice else "")
        + _class_table(r)))
    parts.append(_section("Best, median and worst validation cases", runs,
                          lambda i, r: _overlays(r, slugs[i], folder)))
    parts.append(_section("Configuration and split", runs, lambda i, r: (
        f"<details open><summary>config.yaml</summary><pre>{html.escape(r.config_text)}</pre></details>"
        + "".join(f"<details><summary>{html.escape(part)}: {len(names)} cases</summary>"
                  f"<pre>{html.escape(', '.join(names))}</pre></details>" for part, names in r.split.items()))))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>medseg report</title>'
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(run_folders: list[str | Path], output: str | Path) -> Path:
    """Write ``output/index.html`` and its PNGs for the runs; returns the page. Every run is read and
    checked before anything is written, ``output`` must be new or empty, and it appears whole or not
    at all (built beside it, then renamed)."""
    if not run_folders:
        raise MedsegError("report: give at least one run folder")
    runs = [read_run(folder) for folder in run_folders]
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise MedsegError(f"{output}: exists and is not an empty folder; the report goes into a new one")
    output.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (building / "index.html").write_text(_page(runs, building), encoding="utf-8")
        os.chmod(building, 0o755)  # mkdtemp makes it private; a report is for reading
        if output.exists():
            output.rmdir()  # empty, checked above
        building.rename(output)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return output / "index.html"
