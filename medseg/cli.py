"""The ``medseg`` command: parse arguments, call the library, print one-line errors. No logic here."""

from __future__ import annotations

import argparse
import importlib
import io
import re
import sys

from medseg import __version__
from medseg.errors import MedsegError

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")  # a dotted config key, then '='




def _run_arguments(parser: argparse.ArgumentParser, example: str, data_help: str, nargs: str | None = None) -> None:
    """The arguments every training command takes: CONFIG, --data, --output, --resume."""
    parser.add_argument("config", nargs="?", help=f"pipeline YAML, or the name of a shipped pipeline such as {example} "
                                                  "(not needed with --resume)")
    parser.add_argument("--data", nargs=nargs, help=data_help)
    parser.add_argument("--output", help="folder to create (default runs/<name>-<time>), or to continue with --resume")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    parser.set_defaults(overrides=[])


DATASET_HELP = "dataset folder (MSD, nnU-Net v2, or imagesTr/ + labelsTr/); overrides data.root"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="3D medical image segmentation on MONAI.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train", help="train a model from a YAML config",
        usage="medseg train [CONFIG.yaml | PIPELINE] [--data DIR] [--output DIR] [--resume] [--folds all|K,...] "
              "[KEY=VALUE ...]",
        epilog="KEY=VALUE: override any config key, e.g. train.max_epochs=5 train.max_minutes=10 "
               "patch.patch_size=[64,64,64]. Cross-validation: data.num_folds=5 --folds all --output PARENT "
               "writes PARENT/fold_0 ... fold_4 (--folds 2 trains one fold, e.g. per array task)",
    )
    _run_arguments(p, "hippocampus_patch", DATASET_HELP)
    p.add_argument("--folds", help="'all' or fold numbers (e.g. 0,2): one run folder per fold under --output")

    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of the Swin UNETR encoder on unlabelled images",
        usage="medseg pretrain CONFIG.yaml --data DIR [DIR ...] [--output DIR] [--resume] [KEY=VALUE ...]",
        epilog="KEY=VALUE: e.g. pretrain.inpainting_weight=2 train.max_minutes=60; fine-tune with "
               "'medseg train ... model.pretrained=RUN_DIR'",
    )
    _run_arguments(p, "hippocampus_pretrain",
                   "dataset folders (any layout; labels ignored) or plain folders of images", nargs="+")

    p = sub.add_parser(
        "compare", help="train 2D models (FCN, U-Net, Mask R-CNN, panoptic) on the same slices and compare them",
        usage="medseg compare CONFIG.yaml [--data DIR] [--output DIR] [--resume] [KEY=VALUE ...]",
        epilog="KEY=VALUE: override any config key, e.g. train.max_minutes=5 compare.models=[fcn,unet2d]",
    )
    _run_arguments(p, "compare2d_openkbp", DATASET_HELP)

    p = sub.add_parser(
        "plan", help="plan a pipeline for a dataset: spacing, normalisation, sampling, patch, network, batch",
        usage="medseg plan DATA [-o PLAN.yaml] [--strategy patch|slice2d|lowres] [--minutes M] [--device cpu|cuda]",
        epilog="KEY=VALUE: settings the plan is made under, e.g. data.val_fraction=0.1 (the split it plans from)",
    )
    p.add_argument("data", help=DATASET_HELP.removesuffix("; overrides data.root"))
    p.add_argument("-o", "--output", help="pipeline YAML to write (default: print it)")
    p.add_argument("--strategy", default="patch", choices=["patch", "slice2d", "lowres"])
    p.add_argument("--minutes", type=float, default=None, help="training time budget the plan fits (default: none)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device the plan is made for")
    p.set_defaults(overrides=[])

    p = sub.add_parser(
        "infer", help="segment images with a trained run folder",
        epilog="KEY=VALUE: inference settings, e.g. infer.overlap=0.75 infer.mirror_axes=[0,1,2] "
               "slice2d.fusion=majority",
    )
    p.add_argument("--model", required=True, action="append",
                   help="run folder written by 'medseg train' or 'medseg export'; repeat it, or give a "
                        "cross-validation parent (--folds), for an ensemble that averages the runs' probabilities")
    p.add_argument("-i", "--input", required=True,
                   help="image file, DICOM series folder, folder of images or series folders, or a .zip of these")
    p.add_argument("--series", metavar="UID", help="the DICOM series to predict, of a folder that holds several")
    p.add_argument("-o", "--output", required=True, help="folder for <case>.nii.gz label maps")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--checkpoint", default="best.pt", choices=["best.pt", "last.pt"],
                   help="best.pt (chosen on the run's validation cases) or last.pt (the end of training: use it "
                        "when the images to predict are those validation cases)")
    p.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    p.add_argument("--continue", dest="continue_batch", action="store_true",
                   help="skip cases whose prediction already exists and is complete (an interrupted batch)")
    p.add_argument("--num-parts", type=int, default=1, help="split the inputs into this many parts (array jobs)")
    p.add_argument("--part-id", type=int, default=0, help="which part this process predicts, from 0")
    p.add_argument("--output-format", default="nifti", choices=["nifti", "dicom-seg", "rtstruct"],
                   help="nifti: <case>.nii.gz for any input; for DICOM series also dicom-seg (<case>_seg.dcm) or "
                        "rtstruct (<case>_rtstruct.dcm), referring to the source slices")
    p.add_argument("--save-probabilities", action="store_true", help="also write <case>_probabilities.npz")
    p.add_argument("--save-uncertainty", action="store_true",
                   help="also write <case>_entropy.nii.gz: the per-voxel entropy of the (mean) probabilities")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--no-prefetch", action="store_true",
                   help="do not read the next scan while this one is predicted (one scan less in memory)")
    p.set_defaults(overrides=[])

    p = sub.add_parser(
        "export", help="write a run's networks as TorchScript or ONNX with a sidecar of its preprocessing",
        usage="medseg export RUN_DIR -o DIR [--format torchscript|onnx] [--checkpoint best.pt|last.pt]",
        epilog="predict from the export with 'medseg infer --model DIR' (no checkpoint needed)",
    )
    p.add_argument("run", help="run folder written by 'medseg train'")
    p.add_argument("-o", "--output", required=True, help="new folder for the networks and medseg_export.json")
    p.add_argument("--format", default="torchscript", choices=["torchscript", "onnx"])
    p.add_argument("--checkpoint", default="best.pt", choices=["best.pt", "last.pt"])
    p.set_defaults(overrides=[])

    p = sub.add_parser("evaluate", help="score predicted label maps against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--gt", required=True, help="folder of ground-truth label maps")
    p.add_argument("--dataset", help="dataset folder whose dataset.json names the classes")
    p.add_argument("-o", "--output", help="summary JSON to write (per-case CSV beside it)")
    p.add_argument("--partial-classes", nargs="+", default=[], metavar="NAME",
                   help="classes not every ground truth annotates: scored only on the cases that hold them")

    p = sub.add_parser("report", help="an HTML page of one or more runs: curves, per-case Dice, overlays, config",
                       usage="medseg report RUN_DIR [RUN_DIR ...] -o DIR")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by 'medseg train'")
    p.add_argument("-o", "--output", required=True, help="new folder for index.html and its pictures")

    p = sub.add_parser("check", help="validate a dataset folder; one problem per line")
    p.add_argument("dataset")

    p = sub.add_parser("demo", help="synthetic CT phantoms: train, infer, evaluate in a few minutes")
    p.add_argument("--output", default="demo_output", help="folder for the data, run and predictions")
    p.add_argument("--strategy", default="patch", help="patch, slice2d, lowres, a comma-separated list, or all")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget per strategy")
    return parser


def _user_error(exc: BaseException) -> MedsegError | None:
    """The MedsegError behind ``exc``: MONAI re-raises errors from inside transforms as RuntimeError."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, MedsegError):
            return current
        current = current.__cause__ or current.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # not when stdout is redirected to, e.g., a StringIO
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
    planned = args.command == "train" and getattr(args, "data", None)  # no CONFIG: plan from the data
    if hasattr(args, "resume") and not args.resume and args.config is None and not planned:
        parser.error(f"{args.command}: give a CONFIG (or --resume --output RUN_DIR)"
                     + (" or --data DIR to plan one" if args.command == "train" else ""))
    try:
        # Each command's module (and torch with it) is imported only when that command runs.
        return importlib.import_module(f"medseg.commands.{args.command}").run(args)
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
