"""``medseg infer``."""

from __future__ import annotations

import argparse

from medseg.inference import Predictor


def run(args: argparse.Namespace) -> int:
    predictor = Predictor(args.model, device=args.device, checkpoint=args.checkpoint, overrides=args.overrides)
    written = predictor.predict_paths(
        args.input, args.output, overwrite=args.overwrite, save_probabilities=args.save_probabilities,
        progress=not args.no_progress,
    )
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0
