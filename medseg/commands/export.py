"""``medseg export``."""

from __future__ import annotations

import argparse

from medseg.inference.exporter import export_run


def run(args: argparse.Namespace) -> int:
    output = export_run(args.run, args.output, args.format, checkpoint=args.checkpoint)
    print(f"exported {args.run} as {args.format} to {output}; predict with: "
          f"medseg infer --model {output} -i IMAGES -o OUT")
    return 0
