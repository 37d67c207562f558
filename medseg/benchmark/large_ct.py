"""Large CTs through ``medseg infer``: time split and peak memory, with a 5-fold ensemble and DICOM SEG
output, beside the MONAI bundle-style script (a benchmark, not a test).

    python -m medseg.benchmark.large_ct --data ../shared/data --output bench_large [--slices 280,800,1600]

``ct_example`` is resampled to 512x512x280 and extended head to foot (mirrored copies, the same slice
spacing) to 800 and 1600 slices, so a longer scan covers a longer body as a real one does. Each scan
is predicted as ``medseg infer`` predicts a folder, each in its own process so that its peak memory (VmHWM) is its
own: one 8-class model writing NIfTI, and a 5-fold ensemble writing a DICOM SEG from the same scan
stored as a DICOM series (both without reading ahead, so the split is sequential). Last, a folder of
three 280-slice scans is predicted with and without reading ahead (``--no-prefetch``), twice each.
The model is trained briefly (``--train-minutes``) so that its output has a segmentation's structure,
mostly background with organs in it, on which resampling labels back is cheaper than on an untrained
network's noise; the ensemble's folds are copies of it (its cost does not depend on the weights), and
``--train-minutes 0`` uses random weights instead. Every row gives the case's time split
(read, preprocess, network, resample back, write) from the batch summary and end-to-end over
read + network + write.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from medseg.benchmark.inference_cases import (
    LARGE_CT_OVERRIDES,
    LARGE_CT_SHAPE,
    make_large_ct,
    monai_reference,
    peak_rss_gb,
    random_run,
)
from medseg.benchmark.machine import provenance
from medseg.data.datasets import list_inputs
from medseg.engine.run_folder import write_json
from medseg.inference import Predictor
from medseg.inference.batch import predict_batch
from medseg.inference.ensemble import FOLD_PREFIX, Ensemble, expand_models

STAGES = ("read", "preprocess", "network", "resample", "write")
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def tall_ct(base: Path, slices: int, target: Path) -> Path:
    """``base`` extended along its last axis to ``slices`` slices by mirrored copies (continuous at the
    joins), keeping its spacing: a longer field of view, as a longer scan has."""
    image = sitk.ReadImage(str(base))
    array = sitk.GetArrayFromImage(image)  # [z, y, x]
    repeats = -(-slices // array.shape[0])
    copies = [array[::-1] if k % 2 else array for k in range(repeats)]
    tall = sitk.GetImageFromArray(np.concatenate(copies)[:slices])
    tall.SetSpacing(image.GetSpacing())
    tall.SetOrigin(image.GetOrigin())
    tall.SetDirection(image.GetDirection())
    sitk.WriteImage(tall, str(target), useCompression=True)
    return target


def write_series(volume_path: Path, folder: Path) -> Path:
    """The scan as a CT DICOM series (one file per slice, the headers a SEG needs)."""
    image = sitk.ReadImage(str(volume_path))
    array = sitk.GetArrayFromImage(image).astype(np.int16)  # [z, rows, columns]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    folder.mkdir(parents=True)
    study, series, frame_of_reference = (str(generate_uid()) for _ in range(3))
    for k, pixels in enumerate(array):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        instance = generate_uid()
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = instance
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Benchmark", "B1", "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "", "", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "CT", 1, k + 1, ""
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in direction[:, :2].T.ravel()]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.save_as(folder / f"IM{k:05d}.dcm", enforce_file_format=True)
    return folder


def briefly_trained_run(data: Path, folder: Path, minutes: float) -> Path:
    """The benchmark's model trained for ``minutes`` (in its own process, as ``medseg train`` runs)."""
    command = [sys.executable, "-m", "medseg.cli", "train", "openkbp_patch", "--data", str(data), "--output",
               str(folder), *LARGE_CT_OVERRIDES, f"train.max_minutes={minutes}", "train.final_validation=false",
               "train.progress=false"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"training the benchmark's model failed:\n{result.stderr[-3000:]}")
    return folder


def measure_infer(spec: str) -> None:
    """In this process: what ``medseg infer`` does on a folder (the same models, batch and summary);
    print its wall time, the first case's time split and the peak memory."""
    options = json.loads(spec)
    runs = expand_models(options["models"])
    overrides = options.get("overrides", [])
    model = Predictor(runs[0], overrides=overrides) if len(runs) == 1 else Ensemble(runs, overrides=overrides)
    output = Path(options["output"])
    start = time.perf_counter()
    report = predict_batch(model, list_inputs(options["inputs"]), output, progress=False, log=lambda _: None,
                           keep_going=True, summary=output / "infer_summary.json",
                           output_format=options["output_format"], prefetch=options["prefetch"])
    seconds = time.perf_counter() - start
    if report.failed:
        raise SystemExit(f"{report.failed[0].input}: {report.failed[0].error}")
    case = report.outcomes[0]
    print(json.dumps({"seconds": seconds, "case_seconds": case.seconds, "stages": case.stages,
                      "cases": len(report.outcomes), "peak_gb": peak_rss_gb()}))


def _child(flag: str, *values: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "medseg.benchmark.large_ct", flag, *values],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{flag} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _infer(models: list[Path], inputs: Path, output: Path, output_format: str = "nifti",
           prefetch: bool = False) -> dict:
    spec = {"models": [str(m) for m in models], "inputs": str(inputs), "output": str(output),
            "output_format": output_format, "prefetch": prefetch}
    return _child("--measure-infer", json.dumps(spec))


def _record(name: str, slices: int, result: dict) -> dict:
    """One case as ``results.json`` keeps it: its seconds (the case itself, as the batch summary timed it),
    peak memory, time split, and end to end over read + network + write (None without a split)."""
    stages = {s: result["stages"][s] for s in STAGES if s in result.get("stages", {})}
    seconds = result.get("case_seconds", result["seconds"])
    core = sum(stages.get(s, 0.0) for s in ("read", "network", "write"))
    return {"name": name, "slices": slices, "seconds": seconds, "peak_gb": result["peak_gb"], "stages": stages,
            "end_to_end": seconds / core if core else None}


def _row(record: dict) -> str:
    split = " ".join(f"{s} {t:5.1f}" for s, t in record["stages"].items())
    ratio = f", end-to-end {record['end_to_end']:.2f}x read+network+write" if record["end_to_end"] else ""
    return f"  {record['name']:44s} {record['seconds']:6.1f} s, peak {record['peak_gb']:.2f} GB  [{split}]{ratio}"


def prefetch_gain(scan: Path, run: Path, work: Path, copies: int = 3) -> dict:
    """A folder of ``copies`` scans predicted with and without reading ahead, in that order and back."""
    folder = work / "prefetch_inputs"
    folder.mkdir()
    for k in range(copies):
        (folder / f"scan{k}.nii.gz").symlink_to(scan.resolve())
    walls: dict[bool, list[float]] = {False: [], True: []}
    for repeat, order in enumerate(((False, True), (True, False))):
        for prefetch in order:
            result = _infer([run], folder, work / f"prefetch_{prefetch}_{repeat}", prefetch=prefetch)
            walls[prefetch].append(result["seconds"])
    plain, ahead = (sum(walls[v]) / len(walls[v]) for v in (False, True))
    return {"scans": copies, "seconds_without": plain, "seconds_with": ahead, "gain": plain / ahead}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--output", type=Path, default=None, help="keep the generated files here")
    parser.add_argument("--slices", default="280,800,1600", help="comma-separated slice counts of 512x512 scans")
    parser.add_argument("--folds", type=int, default=5, help="members of the ensemble")
    parser.add_argument("--monai-up-to", type=int, default=800, help="run the MONAI script up to this many slices")
    parser.add_argument("--prefetch-copies", type=int, default=3, help="batch size of the prefetch figure (0: skip)")
    parser.add_argument("--train-minutes", type=float, default=3.0,
                        help="train the model this long on OpenKBP first (0: random weights)")
    parser.add_argument("--measure-infer", help=argparse.SUPPRESS)
    parser.add_argument("--monai-reference", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_infer:
        return measure_infer(args.measure_infer)
    if args.monai_reference:
        return monai_reference(*args.monai_reference)

    if args.output and args.output.exists() and any(args.output.iterdir()):
        sys.exit(f"{args.output}: not empty; the benchmark writes its scans and predictions into a new folder")
    work = args.output or Path(tempfile.mkdtemp(prefix="medseg-large-ct-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = (f"trained {args.train_minutes:g} minutes on OpenKBP, folds are its copies" if args.train_minutes > 0
               else "random weights")
    print(f"files in {work}; 8-class patch network (1.5x1.5x2 mm, 96^3 windows, overlap 0.25), {weights}")
    kbp = args.data / "openkbp_oar"
    folds = work / "folds"
    if args.train_minutes > 0:
        single = briefly_trained_run(kbp, work / "run_single", args.train_minutes)
        for k in range(args.folds):
            shutil.copytree(single, folds / f"{FOLD_PREFIX}{k}")
    else:
        single = random_run("openkbp_patch", kbp, LARGE_CT_OVERRIDES, work / "run_single")
        for k in range(args.folds):
            random_run("openkbp_patch", kbp, LARGE_CT_OVERRIDES, folds / f"{FOLD_PREFIX}{k}", seed=k)
    base = make_large_ct(args.data / "ct_example" / "example_ct.nii.gz", work / "base_280.nii.gz")
    model = f"8-class patch network (1.5x1.5x2 mm, 96^3 windows, overlap 0.25), {weights}"
    summary: dict = {**provenance(), "model": model, "folds": args.folds, "cases": [], "prefetch": None}
    for slices in (int(s) for s in args.slices.split(",")):
        case = work / f"ct_{slices}"
        (case / "nifti").mkdir(parents=True)
        nifti = tall_ct(base, slices, case / "nifti" / f"ct_{slices}.nii.gz")
        write_series(nifti, case / "dicom" / f"ct_{slices}")
        print(f"\n512x512x{slices}:", flush=True)
        single_result = _infer([single], case / "nifti", case / "pred_single")
        records = [_record("medseg infer, 1 model -> NIfTI", slices, single_result),
                   _record(f"medseg infer, {args.folds}-fold ensemble -> DICOM SEG", slices,
                           _infer([folds], case / "dicom", case / "pred_ensemble_seg", "dicom-seg"))]
        if slices <= args.monai_up_to:
            records.append(_record("MONAI bundle-style script, 1 model -> NIfTI", slices,
                                   _child("--monai-reference", str(single), str(nifti), str(case / "pred_monai"))))
        for record in records:
            print(_row(record), flush=True)
        summary["cases"] += records
        write_json(work / "results.json", summary)
    if args.prefetch_copies:
        gain = prefetch_gain(base, single, work, args.prefetch_copies)
        print(f"\nreading ahead, 512x512x{LARGE_CT_SHAPE[2]}:\n  {gain['scans']} scans, one model -> NIfTI: "
              f"{gain['seconds_without']:.1f} s without prefetch, {gain['seconds_with']:.1f} s with "
              f"(mean of 2 runs each, alternating), {gain['gain']:.2f}x", flush=True)
        summary["prefetch"] = gain
        write_json(work / "results.json", summary)


if __name__ == "__main__":
    main()
