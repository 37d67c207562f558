"""Strategies compared on the same data and budget: held-out Dice per class beside what each run spent
(optimiser steps, samples seen, seconds per step, parameters), and the validation learning curves of
all of them by steps and by minutes. Used by ``medseg demo --strategy all`` and by
``python -m medseg.benchmark.strategies``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medseg.config import config_from_dict
from medseg.engine.budget import RunBudget, learning_curve, run_budget
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.plots import write_curves_svg
from medseg.strategies import build_segmenter


@dataclass
class StrategyResult:
    """One strategy's run: its held-out scores and its budget."""

    name: str
    run_dir: Path
    per_class_dice: dict[str, float]
    mean_dice: float
    budget: RunBudget
    infer_seconds_per_case: float | None = None


def strategy_result(name: str, run_dir: Path, summary: dict,
                    infer_seconds_per_case: float | None = None) -> StrategyResult:
    """The scores of an evaluation ``summary`` (``EvaluationResult.summary``, or a ``metrics.json``) and
    the budget recorded in the run's ``last.pt``."""
    state = load_checkpoint(run_dir / "last.pt")
    network = build_segmenter(config_from_dict(state["config"])).network
    budget = run_budget(state, sum(p.numel() for p in network.parameters()))
    per_class = summary["per_class"]
    return StrategyResult(name, run_dir, {c: float(per_class[c]["dice"]) for c in per_class},
                          float(summary["mean_dice"]), budget, infer_seconds_per_case)


def comparison_table(results: list[StrategyResult]) -> str:
    """A right-aligned text table, one row per strategy."""
    classes = list(results[0].per_class_dice)
    with_infer = any(r.infer_seconds_per_case is not None for r in results)
    header = ["strategy", *classes, "mean Dice", "steps", "samples", "s/step", "parameters"]
    header += ["infer s/case"] if with_infer else []
    rows = [header]
    for r in results:
        row = [r.name, *(f"{r.per_class_dice.get(c, float('nan')):.3f}" for c in classes), f"{r.mean_dice:.3f}",
               str(r.budget.steps), str(r.budget.samples_seen), f"{r.budget.seconds_per_step:.2f}",
               f"{r.budget.parameters / 1e6:.2f} M"]
        if with_infer:
            row.append("–" if r.infer_seconds_per_case is None else f"{r.infer_seconds_per_case:.2f}")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def write_comparison_curves(folder: Path, results: list[StrategyResult], title: str) -> list[Path]:
    """Validation mean Dice of every strategy by optimiser steps and by training minutes (SVG)."""
    written = []
    for x, label in (("step", "optimiser steps"), ("elapsed_min", "training minutes")):
        curves = {r.name: learning_curve(r.run_dir, "val_mean_dice", x) for r in results}
        path = folder / f"curves_{x}.svg"
        write_curves_svg(path, curves, label, "validation mean Dice", f"{title}: validation Dice by {label}")
        written.append(path)
    return written
