"""``medseg train``."""

from __future__ import annotations

import argparse

from medseg.workflows.training import train


def run(args: argparse.Namespace) -> int:
    train(args.config, data_dir=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0
