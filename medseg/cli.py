"""The ``medseg`` command: parse arguments, call the library, print one-line errors. No logic here."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from medseg import __version__
from medseg.errors import MedsegError

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a dotted config key, then '='


def _train(args: argparse.Namespace) -> int:
    from medseg.training import train

    train(args.config, data_dir=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from medseg.pretraining import pretrain

    pretrain(args.config, data_dirs=args.data, output=args.output, resume=args.resume, overrides=args.overrides)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from medseg.compare import run_compare

    run_compare(args.config, data_dir=args.data, output=args.output, overrides=args.overrides)
    return 0


def _infer(args: argparse.Namespace) -> int:
    from medseg.inference import Predictor

    predictor = Predictor(args.model, device=args.device, overrides=args.overrides)
    written = predictor.predict_paths(
        args.input, args.output, overwrite=args.overwrite, save_probabilities=args.save_probabilities,
        progress=not args.no_progress,
    )
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from medseg.data.datasets import discover_dataset
    from medseg.evaluation import evaluate_folders, format_table

    names = None
    if args.dataset:
        dataset = discover_dataset(args.dataset, require_labels=False)
        names = dict(enumerate(dataset.class_names or [], start=0)) or None
    result = evaluate_folders(args.pred, args.gt, class_names=names, output_json=args.output)
    print(format_table(result))
    if args.output:
        print(f"summary: {args.output}; per case: {Path(args.output).with_suffix('.csv')}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from medseg.checks import check_dataset

    dataset, problems = check_dataset(args.dataset)
    for problem in problems:
        print(problem)
    if dataset is not None:
        print(f"{args.dataset}: {dataset.layout} layout, {len(dataset.cases)} cases, "
              f"classes {dataset.class_names or 'not declared'}: {len(problems)} problem(s)")
    return 1 if problems else 0


def _demo(args: argparse.Namespace) -> int:
    from medseg.demo import run_demo

    run_demo(args.output, strategy=args.strategy, minutes=args.minutes)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="3D medical image segmentation on MONAI.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train a model from a YAML config",
        usage="medseg train CONFIG.yaml [--data DIR] [--output DIR] [--resume] [KEY=VALUE ...]",
        epilog="KEY=VALUE: override any config key, e.g. train.max_epochs=5 train.max_minutes=10 data.patch_size=[64,64,64]",
    )
    p.add_argument("config", help="pipeline YAML, e.g. pipelines/hippocampus_patch.yaml")
    p.add_argument("--data", help="dataset folder (MSD, nnU-Net v2, or imagesTr/ + labelsTr/); overrides data.root")
    p.add_argument("--output", help="run folder to create (default runs/<name>-<time>), or to continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.set_defaults(func=_train, overrides=[])

    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of the Swin UNETR encoder on unlabelled images",
        usage="medseg pretrain CONFIG.yaml --data DIR [DIR ...] [--output DIR] [--resume] [KEY=VALUE ...]",
        epilog="KEY=VALUE: e.g. pretrain.inpainting_weight=2 train.max_minutes=60; fine-tune with "
               "'medseg train ... model.pretrained=RUN_DIR'",
    )
    p.add_argument("config", help="pipeline YAML, e.g. pipelines/hippocampus_pretrain.yaml")
    p.add_argument("--data", nargs="+", help="dataset folders (any layout; labels ignored) or plain folders of images")
    p.add_argument("--output", help="run folder to create (default runs/<name>-<time>), or to continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.set_defaults(func=_pretrain, overrides=[])

    p = sub.add_parser(
        "compare", help="train 2D models (FCN, U-Net, Mask R-CNN, panoptic) on the same slices and compare them",
        usage="medseg compare CONFIG.yaml [--data DIR] [--output DIR] [KEY=VALUE ...]",
        epilog="KEY=VALUE: override any config key, e.g. compare.max_minutes=5 compare.models=[fcn,unet2d]",
    )
    p.add_argument("config", help="pipeline YAML, e.g. pipelines/compare2d_openkbp.yaml")
    p.add_argument("--data", help="dataset folder (MSD, nnU-Net v2, or imagesTr/ + labelsTr/); overrides data.root")
    p.add_argument("--output", help="folder to create for the results (default runs/<name>-<time>)")
    p.set_defaults(func=_compare, overrides=[])

    p = sub.add_parser(
        "infer", help="segment images with a trained run folder",
        epilog="KEY=VALUE: inference settings, e.g. infer.overlap=0.75 infer.mirror_axes=[0,1,2] slice2d.fusion=majority",
    )
    p.add_argument("--model", required=True, help="run folder written by 'medseg train'")
    p.add_argument("-i", "--input", required=True, help="image file, DICOM series folder, or folder of images")
    p.add_argument("-o", "--output", required=True, help="folder for <case>.nii.gz label maps")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.npz")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.set_defaults(func=_infer, overrides=[])

    p = sub.add_parser("evaluate", help="score predicted label maps against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--gt", required=True, help="folder of ground-truth label maps")
    p.add_argument("--dataset", help="dataset folder whose dataset.json names the classes")
    p.add_argument("-o", "--output", help="summary JSON to write (per-case CSV beside it)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("check", help="validate a dataset folder; one problem per line")
    p.add_argument("dataset")
    p.set_defaults(func=_check)

    p = sub.add_parser("demo", help="synthetic CT phantoms: train, infer, evaluate in a few minutes")
    p.add_argument("--output", default="demo_output", help="folder for the data, run and predictions")
    p.add_argument("--strategy", default="patch", help="patch, slice2d, a comma-separated list, or all (compared)")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget per strategy")
    p.set_defaults(func=_demo)
    return parser


def _user_error(exc: BaseException) -> MedsegError | None:
    """The MedsegError behind ``exc``: MONAI re-raises errors from inside transforms as RuntimeError."""
    while exc is not None:
        if isinstance(exc, MedsegError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach cluster logs as they happen
    parser = build_parser()
    # KEY=VALUE overrides may come anywhere, also after a list of folders: take them out first.
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if OVERRIDE.match(a)]
    args = parser.parse_args([a for a in argv if not OVERRIDE.match(a)])
    if overrides and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(overrides)}")
    if overrides:
        args.overrides = overrides
    try:
        return args.func(args)
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is None:
            raise
        print(f"medseg {args.command}: error: {user_error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
