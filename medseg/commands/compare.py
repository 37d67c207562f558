"""``medseg compare``."""

from __future__ import annotations

import argparse

from medseg.workflows.comparison import run_compare


def run(args: argparse.Namespace) -> int:
    run_compare(args.config, data_dir=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0
