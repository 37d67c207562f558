"""``medseg report``."""

from __future__ import annotations

import argparse

from medseg.report import write_report


def run(args: argparse.Namespace) -> int:
    page = write_report(args.runs, args.output)
    print(f"report: {page} (open it in a browser; it needs no network)")
    return 0
