"""``medseg check``: one problem per line, then a summary; exit 1 when there are problems."""

from __future__ import annotations

import argparse

from medseg.data.checks import check_dataset


def run(args: argparse.Namespace) -> int:
    dataset, problems = check_dataset(args.dataset)
    for problem in problems:
        print(problem)
    if dataset is not None:
        print(f"{args.dataset}: {dataset.layout} layout, {len(dataset.cases)} cases, "
              f"classes {dataset.class_names or 'not declared'}: {len(problems)} problem(s)")
    return 1 if problems else 0
