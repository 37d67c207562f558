"""Batches of cases that survive: one bad case is recorded and skipped, an interrupted batch continues
where it stopped, and a folder splits deterministically across the tasks of a SLURM array. Any model
with ``predict_file`` (a Predictor, an Ensemble) predicts a batch the same way.

The summary (``infer_summary.json``, or ``infer_summary_part<K>of<N>.json`` for one part) is rewritten
atomically after every case, so even a killed batch leaves one that says how far it got.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import nibabel as nib
import numpy as np
from tqdm import tqdm

from medseg.errors import MedsegError
from medseg.inference.dicom_seg import write_dicom_seg
from medseg.inference.dicom_source import read_source_series
from medseg.inference.output_formats import check_output_format, dicom_output_is_complete, output_name
from medseg.inference.rtstruct import write_rtstruct
from medseg.io import atomic_output, case_id, write_volume

Status = Literal["written", "skipped", "failed"]


@dataclass
class CaseOutcome:
    """What became of one input: written, skipped (its output was already complete) or failed."""

    input: str
    output: str
    status: Status
    seconds: float = 0.0
    error: str | None = None
    stages: dict[str, float] = field(default_factory=dict)  # read, preprocess, network, resample, write


@dataclass
class BatchReport:
    """Every case's outcome (complete outputs found by ``--continue`` first, then the cases predicted, in
    input order); written to ``summary_path`` after every case."""

    summary_path: Path | None = None
    outcomes: list[CaseOutcome] = field(default_factory=list)
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def written(self) -> list[Path]:
        return [Path(o.output) for o in self.outcomes if o.status == "written"]

    @property
    def failed(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def add(self, outcome: CaseOutcome) -> None:
        self.outcomes.append(outcome)
        if self.summary_path is not None:
            with atomic_output(self.summary_path) as tmp:
                tmp.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    def as_dict(self) -> dict:
        return {"started": self.started, "written": self.count("written"), "skipped": self.count("skipped"),
                "failed": self.count("failed"), "cases": [asdict(o) for o in self.outcomes]}

    def line(self) -> str:
        """One line for the end of the batch."""
        where = f"; summary: {self.summary_path}" if self.summary_path is not None else ""
        return (f"{self.count('written')} written, {self.count('skipped')} skipped (already complete), "
                f"{self.count('failed')} failed{where}")


def select_part(files: list[Path], num_parts: int, part_id: int) -> list[Path]:
    """The ``part_id``-th of ``num_parts`` interleaved parts of the files in sorted order: the same files
    go to the same part on every run and machine, and parts differ in size by at most one."""
    if num_parts < 1:
        raise MedsegError(f"--num-parts: at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise MedsegError(f"--part-id: between 0 and {num_parts - 1} for --num-parts {num_parts}, got {part_id}")
    return sorted(files, key=lambda p: p.name)[part_id::num_parts]


def summary_name(num_parts: int, part_id: int) -> str:
    return "infer_summary.json" if num_parts == 1 else f"infer_summary_part{part_id}of{num_parts}.json"


def output_is_complete(path: Path, output_format: str = "nifti") -> bool:
    """Whether ``path`` is a readable NIfTI volume, ``.npz`` archive or DICOM object of ``output_format``
    (outputs are written atomically: one that exists under its final name was written whole, unless
    something else put it there)."""
    if path.suffix == ".dcm":
        return dicom_output_is_complete(path, output_format)
    if path.suffix == ".npz":
        try:
            with np.load(path) as archive:
                return "probabilities" in archive.files
        except Exception:
            return False
    try:
        image = nib.load(path)
        # Reads every byte: a truncated file fails.
        return isinstance(image, nib.spatialimages.SpatialImage) and np.asarray(image.dataobj).ndim == 3
    except Exception:
        return False


class CaseModel(Protocol):
    """What a batch needs of a model (a Predictor or an Ensemble)."""

    @property
    def class_names(self) -> list[str]: ...

    @property
    def name(self) -> str: ...

    def prepare(self, source: str | Path) -> Any: ...

    def predict_file(self, source: Any, keep_probabilities: bool = False, with_entropy: bool = False) -> Any: ...


def output_paths(target: Path, source: Path) -> dict[str, Path]:
    """Where one case's outputs go: labels, probabilities (``--save-probabilities``) and the entropy map
    (``--save-uncertainty``)."""
    case = case_id(source)
    return {"labels": target, "probabilities": target.with_name(f"{case}_probabilities.npz"),
            "entropy": target.with_name(f"{case}_entropy.nii.gz")}


def predict_batch(
    model: CaseModel,
    files: list[Path],
    output_dir: str | Path,
    overwrite: bool = False,
    save_probabilities: bool = False,
    save_uncertainty: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    skip_complete: bool = False,
    keep_going: bool = False,
    summary: Path | None = None,
    output_format: str = "nifti",
    prefetch: bool = True,
) -> BatchReport:
    """Predict each file into ``output_dir/<case>.nii.gz`` (uint8 labels, the input's geometry), or for
    DICOM series into ``<case>_seg.dcm`` / ``<case>_rtstruct.dcm`` (``output_format``).

    All output names are checked before any work starts: an output that would replace one of the
    inputs is always refused; an existing output is refused unless ``overwrite``, or skipped when
    ``skip_complete`` and it is complete (``--continue``). With ``keep_going`` a case that fails is
    recorded and the batch goes on (``medseg infer`` on a folder); otherwise its error stops the batch.
    The report is also written to ``summary`` after every case when given. With ``prefetch`` the next
    scan is read and preprocessed (``model.prepare``) in a background thread while the current one is
    predicted.
    """
    output_dir = Path(output_dir)
    check_output_format(output_format, files)
    targets = [output_dir / output_name(case_id(f), output_format) for f in files]
    if len(set(targets)) != len(targets):
        raise MedsegError(f"{output_dir}: several inputs map to the same case name; rename them")
    sources = {f.resolve() for f in files}
    for target in targets:
        if target.resolve() in sources:
            raise MedsegError(f"{target}: output would overwrite an input image; choose another -o folder")
        if target.exists() and not (overwrite or skip_complete):
            raise MedsegError(f"{target}: already exists; pass --overwrite to replace it or --continue to keep it")
    report = BatchReport(summary)
    todo = []
    for source, target in zip(files, targets):
        paths = output_paths(target, source)
        wanted = [paths["labels"], *([paths["probabilities"]] if save_probabilities else []),
                  *([paths["entropy"]] if save_uncertainty else [])]
        if skip_complete and not overwrite and all(output_is_complete(p, output_format) for p in wanted):
            report.add(CaseOutcome(str(source), str(target), "skipped"))
        else:
            todo.append((source, target, paths))
    bar = tqdm(todo, desc="infer", unit="case", disable=None if progress else True)
    say = bar.write if not bar.disable else log
    # One reader thread reads and preprocesses the next scan while this one is predicted (one more
    # scan in memory).
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending: Future[Any] | None = None
        for index, (source, target, paths) in enumerate(bar):
            start = time.perf_counter()
            scan = pending if pending is not None else _OnDemand(model.prepare, source)
            pending = reader.submit(model.prepare, todo[index + 1][0]) if prefetch and index + 1 < len(todo) else None
            try:
                stages = _predict_one(model, source, scan, paths, save_probabilities, save_uncertainty, output_format)
            except Exception as error:  # any failure of one case: recorded, and the batch goes on
                if not keep_going:
                    raise
                message = str(error) if isinstance(error, MedsegError) else f"{type(error).__name__}: {error}"
                report.add(CaseOutcome(str(source), str(target), "failed", time.perf_counter() - start, message))
                say(f"{source.name}: FAILED: {message}")
                continue
            seconds = time.perf_counter() - start
            report.add(CaseOutcome(str(source), str(target), "written", seconds, stages=stages))
            say(f"{source.name} -> {target} ({seconds:.1f} s)")
    return report


class _OnDemand(Future):
    """A scan prepared in this thread when its result is first asked for: without reading ahead, the case
    reads, then predicts, one after the other (a reader thread started at once would race the timing)."""

    def __init__(self, prepare: Any, source: Path) -> None:
        super().__init__()
        self._prepare, self._source = prepare, source

    def result(self, timeout: float | None = None) -> Any:
        if not self.done():
            try:
                self.set_result(self._prepare(self._source))
            except Exception as error:  # raised to the caller below, as a reader thread's would be
                self.set_exception(error)
        return super().result(timeout)


def _predict_one(model: CaseModel, source: Path, scan: Future[Any], paths: dict[str, Path],
                 save_probabilities: bool, save_uncertainty: bool, output_format: str) -> dict[str, float]:
    """Predict one case from its scan being prepared by ``scan`` and write its outputs; returns the
    seconds of each stage, and ``waited``: how long this case waited for its reader."""
    # The series' headers are read (and checked) before the network runs, so a series DICOM outputs
    # cannot refer to fails at once.
    series = read_source_series(source) if output_format != "nifti" else None
    start = time.perf_counter()
    prepared = scan.result()
    waited = time.perf_counter() - start
    result = model.predict_file(prepared, keep_probabilities=save_probabilities, with_entropy=save_uncertainty)
    stages = {**result.seconds, "waited": waited}
    start = time.perf_counter()
    if series is None:
        write_volume(paths["labels"], result.labels, result.affine, reference_header=result.header)
    else:
        frames = series.labels_on_frames(result.labels, result.affine)
        writer = write_dicom_seg if output_format == "dicom-seg" else write_rtstruct
        writer(paths["labels"], frames, series, model.class_names, model.name)
    if result.probabilities is not None:
        with atomic_output(paths["probabilities"]) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=result.probabilities, affine=result.affine,
                                class_names=model.class_names)
    if result.entropy is not None:
        write_volume(paths["entropy"], result.entropy, result.affine, reference_header=result.header)
    stages["write"] = time.perf_counter() - start
    return stages
