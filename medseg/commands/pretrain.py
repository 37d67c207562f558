"""``medseg pretrain``."""

from __future__ import annotations

import argparse

from medseg.workflows.pretraining import pretrain


def run(args: argparse.Namespace) -> int:
    pretrain(args.config, data_dirs=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0
