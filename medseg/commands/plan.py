"""``medseg plan``: a dataset -> a pipeline YAML with a reason beside every planned value."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.errors import MedsegError
from medseg.io import atomic_output
from medseg.planning import plan_dataset


def run(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    if output is not None and output.exists():
        raise MedsegError(f"{output}: already exists; choose another -o (an edited plan is never overwritten)")
    if output is not None and output.resolve().is_relative_to(Path(args.data).resolve()):
        raise MedsegError(f"{output}: inside the dataset folder; medseg writes nothing there, choose another -o")
    planned = plan_dataset(args.data, strategy=args.strategy, device=args.device, minutes=args.minutes,
                           overrides=args.overrides)
    text = planned.to_yaml(args.strategy)
    if output is None:
        print(text, end="")
        return 0
    with atomic_output(output) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"wrote {output}; train with: medseg train {output}")
    return 0
