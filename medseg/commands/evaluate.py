"""``medseg evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.data.datasets import discover_dataset
from medseg.evaluation import evaluate_folders, format_table


def run(args: argparse.Namespace) -> int:
    names = None
    if args.dataset:
        dataset = discover_dataset(args.dataset, require_labels=False)
        names = dict(enumerate(dataset.class_names or [], start=0)) or None
    result = evaluate_folders(args.pred, args.gt, class_names=names, output_json=args.output,
                              partial_classes=args.partial_classes)
    print(format_table(result))
    if args.output:
        print(f"summary: {args.output}; per case: {Path(args.output).with_suffix('.csv')}")
    return 0
