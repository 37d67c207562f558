"""The three strategies on one dataset and one budget, side by side (a benchmark, not a test).

    python -m medseg.benchmark.strategies --data ../shared/data/openkbp_oar --minutes 10 --output runs/strategies
    python -m medseg.benchmark.strategies ... --strategies patch,lowres  train.seed=1   # KEY=VALUE for every run
    python -m medseg.benchmark.strategies ... --output runs/strategies --reuse   # add strategies to a report

Each strategy trains as ``medseg train --data DIR model.strategy=S train.max_minutes=M`` would: planned
from the training cases for this machine and budget, the same split, and the same final validation
(the held-out cases predicted as ``medseg infer`` does and scored in their own geometry). The table
gives held-out Dice per class beside optimiser steps, samples seen, seconds per step and parameters,
so that a strategy whose steps are slow but efficient is seen as such; ``curves_step.svg`` and
``curves_elapsed_min.svg`` draw the validation learning curves of all of them. Everything is written
under ``--output`` (one run folder per strategy, ``results.md``); the strategies run one after another.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from medseg.benchmark.command_line import print_report
from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.workflows.strategy_comparison import comparison_table, strategy_result, write_comparison_curves
from medseg.workflows.training import train

STRATEGIES = ("patch", "slice2d", "lowres")


def finished(run_dir: Path) -> bool:
    """A strategy's run that trained to the end and was scored."""
    return (run_dir / "validation" / "metrics.json").is_file()


def run_strategies(data: Path, minutes: float, strategies: list[str], output: Path, overrides: list[str]) -> str:
    """Train and score every strategy (reusing runs already finished in ``output``); returns the Markdown
    report (also written to results.md)."""
    results = []
    for name in strategies:
        run_dir = output / name
        if finished(run_dir):
            print(f"{run_dir}: finished earlier, reused")
        else:
            train(None, data_dir=data, output=run_dir, log=print,
                  overrides=[f"model.strategy={name}", f"train.max_minutes={minutes}", "train.progress=false",
                             *overrides])
        summary = json.loads((run_dir / "validation" / "metrics.json").read_text(encoding="utf-8"))
        results.append(strategy_result(name, run_dir, summary))
    curves = write_comparison_curves(output, results, data.name)
    report = "\n".join([
        f"# Strategies on {data.name}, {minutes:g} minutes of training each",
        "",
        f"Held-out cases: the validation cases of each run's split.json (the same split for all). Overrides: "
        f"{' '.join(overrides) or 'none'}. Machine time of this report: {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
        "```",
        comparison_table(results),
        "```",
        "",
        "steps: optimiser steps; samples: training crops, slices or volumes seen; s/step: training and validation "
        "time per step; Dice: held-out cases in their own geometry (best.pt).",
        "",
        *(f"![{path.stem}]({path.name})" for path in curves),
        "",
    ])
    with atomic_output(output / "results.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per strategy")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated, in order")
    parser.add_argument("--output", required=True, type=Path, help="a new or empty folder")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the strategies already finished in --output and train only the others")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for every run")
    args = parser.parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]

    def comparison() -> str:
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies:
            raise MedsegError(f"--strategies: unknown '{','.join(unknown)}'; choose among {', '.join(STRATEGIES)}")
        if args.output.exists() and any(args.output.iterdir()) and not args.reuse:
            raise MedsegError(f"{args.output}: exists and is not empty; choose a new --output, or --reuse")
        unfinished = [s for s in strategies if (args.output / s).exists() and not finished(args.output / s)]
        if unfinished:
            raise MedsegError(f"{args.output / unfinished[0]}: a run that did not finish; remove it to train it again")
        return run_strategies(args.data, args.minutes, strategies, args.output, args.overrides)

    return print_report(comparison)


if __name__ == "__main__":
    sys.exit(main())
