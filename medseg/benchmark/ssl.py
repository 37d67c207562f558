"""Does Swin UNETR self-supervised pretraining pay? Both arms over several seeds (a benchmark, not a test).

    python -m medseg.benchmark.ssl --data ../shared/data/hippocampus --output runs/ssl \\
        --pretrain-minutes 60 --seeds 0,1,2 --fraction 0.1 --finetune-epochs 24

The protocol:

1. the split is the one ``medseg train`` makes for the fine-tuning pipeline (``--finetune-config``), so
   the held-out validation cases are the same for every run;
2. the encoder is pretrained (``--pretrain-config``, ``--pretrain-minutes``) on the images of *all*
   training cases, labels unused, and never on a held-out case's image (linked into
   ``OUT/pretraining_images``, nothing is copied or written into the dataset); ``--pretrained RUN``
   reuses a pretraining run instead;
3. for every seed, both arms fine-tune on the same seeded ``--fraction`` of the training cases, with the
   same settings and a fixed number of steps (``--finetune-epochs`` of the pipeline's
   ``train.iterations_per_epoch``), not minutes, so that the arms see the same number of samples: from
   scratch, and from the pretrained encoder (``model.pretrained``);
4. each run's final model is scored on the held-out cases in their own geometry (the run's
   ``validation/metrics.json``);
5. linear probes (``medseg.benchmark.ssl_probe``) of the frozen encoder, random against pretrained, on the
   first seed's fine-tuning cases: what the pretraining put into the features, apart from how fast
   fine-tuning learns (``OUT/probe.json``).

``OUT/results.md`` gives every run's held-out Dice, the mean and standard deviation per arm, the paired
difference per seed, the pretraining losses, and the validation learning curves of every run
(``curves_step.svg``). Runs go one after another; an existing run folder is reused, so an interrupted
protocol continues with the runs still missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

from medseg.benchmark.command_line import print_report
from medseg.benchmark.ssl_probe import ProbeResult, probe_run, probe_table
from medseg.engine.budget import learning_curve
from medseg.engine.plots import write_curves_svg
from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.workflows.preparation import prepare_labelled_run
from medseg.workflows.pretraining import pretrain
from medseg.workflows.training import train

ARMS = ("scratch", "pretrained")


def held_out_dice(run_dir: Path) -> float:
    """Mean Dice of a finished run's final validation, in the cases' own geometry."""
    return float(json.loads((run_dir / "validation" / "metrics.json").read_text(encoding="utf-8"))["mean_dice"])


def link_training_images(data: Path, config: str, folder: Path, overrides: list[str]) -> int:
    """Symbolic links to the images of every training case of the split fine-tuning uses; returns how many."""
    run = prepare_labelled_run("train", config, data, folder / "unused", overrides)
    folder.mkdir(parents=True, exist_ok=True)
    for case in run.part("train"):
        link = folder / case.image.name
        if not link.exists():
            link.symlink_to(case.image.resolve())
    return len(run.part("train"))


def _finished(run_dir: Path) -> bool:
    return (run_dir / "validation" / "metrics.json").is_file()


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "–"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def pretraining_summary(run_dir: Path) -> list[str]:
    """First and last epoch's training losses and the validation loss of the pretraining run."""
    lines = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    if not lines:
        return ["(no pretraining epoch logged)"]
    first, last = lines[0], lines[-1]
    keys = [k for k in last if k.startswith("train_") or k.startswith("val_")]
    rows = [f"| {k} | {first.get(k, float('nan')):.3f} | {last[k]:.3f} |" for k in keys]
    return [f"Pretraining: {last.get('step', '?')} steps, {last.get('samples_seen', '?')} sub-volumes, "
            f"{last['elapsed_min']:.1f} min.", "", "| loss | first epoch | last epoch |", "|---|---|---|", *rows]


def _probes(out: Path, run_dir: Path, pretrained: Path) -> str:
    """The probes' table, computed once and kept in ``OUT/probe.json``."""
    path = out / "probe.json"
    if not path.is_file():
        results = probe_run(run_dir, pretrained)
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({arm: asdict(r) for arm, r in results.items()}, indent=2), encoding="utf-8")
    kept = json.loads(path.read_text(encoding="utf-8"))
    names = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["data"]["class_names"]
    return probe_table({arm: ProbeResult(**r) for arm, r in kept.items()}, names)


def run_protocol(args: argparse.Namespace) -> str:
    out: Path = args.output
    common = [f"data.train_fraction={args.fraction}", "train.max_minutes=null",
              f"train.max_epochs={args.finetune_epochs}", "train.progress=false", *args.overrides]
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = out / "pretraining"
        if not (pretrained / "best.pt").is_file():
            images = out / "pretraining_images"
            count = link_training_images(args.data, args.finetune_config, images, args.overrides)
            print(f"pretraining on the images of the {count} training cases (held-out cases excluded)")
            pretrain(args.pretrain_config, [images], pretrained,
                     overrides=[f"train.max_minutes={args.pretrain_minutes}", "train.progress=false",
                                *args.pretrain_override])
    scores: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    curves = {}
    for seed in args.seeds:
        for arm in ARMS:
            run_dir = out / f"{arm}_seed{seed}"
            if not _finished(run_dir):
                extra = [f"model.pretrained={pretrained}"] if arm == "pretrained" else []
                train(args.finetune_config, data_dir=args.data, output=run_dir,
                      overrides=[*common, f"train.seed={seed}", *extra])
            scores[arm][seed] = held_out_dice(run_dir)
            curves[f"{arm} seed {seed}"] = learning_curve(run_dir, "val_mean_dice", "step")
    write_curves_svg(out / "curves_step.svg", curves, "optimiser steps", "validation mean Dice",
                     "Fine-tuning, validation Dice by steps")
    differences = [scores["pretrained"][s] - scores["scratch"][s] for s in args.seeds]
    probes = _probes(out, out / f"scratch_seed{args.seeds[0]}", pretrained)
    report = "\n".join([
        f"# Swin UNETR pretraining: {args.data.name}, {args.fraction:g} of the labels, seeds "
        f"{', '.join(map(str, args.seeds))}",
        "",
        f"Fine-tuning: `{args.finetune_config}` with {' '.join(common)}; pretrained encoder: `{pretrained}`.",
        "",
        "| seed | from scratch | pretrained | difference |",
        "|---|---|---|---|",
        *(f"| {s} | {scores['scratch'][s]:.3f} | {scores['pretrained'][s]:.3f} | {d:+.3f} |"
          for s, d in zip(args.seeds, differences)),
        f"| mean ± std | {mean_std(list(scores['scratch'].values()))} | "
        f"{mean_std(list(scores['pretrained'].values()))} | {mean_std(differences)} |",
        "",
        "Held-out mean Dice of each run's final model (its validation cases, in their own geometry).",
        "",
        *(pretraining_summary(pretrained) if (pretrained / "train_log.jsonl").is_file() else []),
        "",
        "Linear probes of the frozen encoder (one 1x1x1 convolution on every stage's features), fitted on "
        f"seed {args.seeds[0]}'s fine-tuning cases and scored on the held-out cases:",
        "",
        probes,
        "",
        "![curves](curves_step.svg)",
        "",
    ])
    with atomic_output(out / "results.md") as tmp:
        tmp.write_text(report, encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="the labelled dataset to fine-tune on")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--finetune-config", default="hippocampus_swin")
    parser.add_argument("--pretrain-config", default="hippocampus_pretrain")
    parser.add_argument("--pretrained", type=Path, help="an existing pretraining run (skips pretraining)")
    parser.add_argument("--pretrain-minutes", type=float, default=60.0)
    parser.add_argument("--pretrain-override", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for the pretraining run (repeatable)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds, one fine-tune per arm each")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of the training cases with labels")
    parser.add_argument("--finetune-epochs", type=int, default=24)
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE for every fine-tuning run")
    args = parser.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        print(f"error: --seeds: integers separated by commas, got '{args.seeds}'", file=sys.stderr)
        return 1

    def protocol() -> str:
        if not args.seeds:
            raise MedsegError("--seeds: at least one seed")
        if args.pretrained is not None and not (args.pretrained / "best.pt").is_file():
            raise MedsegError(f"{args.pretrained}: not a pretraining run folder (no best.pt)")
        return run_protocol(args)

    return print_report(protocol)


if __name__ == "__main__":
    sys.exit(main())
