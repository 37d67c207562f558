"""``medseg train``: one run, or the folds of a cross-validation (``--folds``)."""

from __future__ import annotations

import argparse

from medseg.workflows.folds import train_folds
from medseg.workflows.training import train


def run(args: argparse.Namespace) -> int:
    if args.folds is not None:
        train_folds(args.config, args.folds, data_dir=args.data, output=args.output, resume=args.resume,
                    overrides=args.overrides)
    else:
        train(args.config, data_dir=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0
