"""``medseg infer``: one scan, or a folder of scans case by case, where a case that fails is reported in
the summary and the rest go on (the exit status says so at the end)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medseg.data.datasets import list_inputs
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.inference.batch import predict_batch, select_part, summary_name
from medseg.inference.ensemble import Ensemble, expand_models


def run(args: argparse.Namespace) -> int:
    if args.overwrite and args.continue_batch:
        raise MedsegError("--overwrite and --continue: choose one (replace every prediction, or keep complete ones)")
    runs = expand_models(args.model)
    options = {"device": args.device, "checkpoint": args.checkpoint, "overrides": args.overrides}
    model = Predictor(runs[0], **options) if len(runs) == 1 else Ensemble(runs, **options)
    if len(runs) > 1:
        print(f"ensemble of {len(runs)} runs: {', '.join(map(str, runs))}")
    inputs = list_inputs(args.input, series=args.series)
    given = Path(args.input)
    # A folder (or archive) of several cases, not one image or one DICOM series.
    batch = len(inputs) > 1 or (given.is_dir() and args.series is None and inputs != [given])
    if args.series is not None:
        print(f"{given}: DICOM series {args.series}")
    files = select_part(inputs, args.num_parts, args.part_id)
    output = Path(args.output)
    report = predict_batch(
        model, files, output, overwrite=args.overwrite, save_probabilities=args.save_probabilities,
        save_uncertainty=args.save_uncertainty, progress=not args.no_progress, skip_complete=args.continue_batch,
        keep_going=batch, summary=output / summary_name(args.num_parts, args.part_id) if batch else None,
        output_format=args.output_format, prefetch=not args.no_prefetch,
    )
    part = f" (part {args.part_id} of {args.num_parts})" if args.num_parts > 1 else ""
    print(f"{output}{part}: {report.line()}")
    for failure in report.failed:  # most errors name their file already
        error = failure.error or "failed"
        named = error if error.startswith(str(failure.input)) else f"{failure.input}: {error}"
        print(f"error: {named}", file=sys.stderr)
    return 1 if report.failed else 0
