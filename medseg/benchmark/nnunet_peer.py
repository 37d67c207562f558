"""nnU-Net v2 against medseg on the same split and the same wall-clock budget (a benchmark, not a test).

    python -m medseg.benchmark.nnunet_peer --data ../shared/data/hippocampus --minutes 10 --workdir /tmp/peer
    python -m medseg.benchmark.nnunet_peer ... --with-medseg       # also train and time medseg itself

Why: "how does medseg compare with nnU-Net?" needs both trained on the same cases, scored on the same held-out
cases with the same metric code, and given the same training time. This script

1. splits the dataset exactly as ``medseg train --data DIR`` does (medseg's own ``prepare_labelled_run``);
2. builds a separate virtual environment ``<workdir>/nnunet_venv`` for nnU-Net: a ``.pth`` file points it at
   this interpreter's site-packages so the pinned torch is reused, not downloaded again, and ``nnunetv2`` is
   installed into it under ``PIP_CONSTRAINT`` (medseg's constraints.txt). medseg never imports nnU-Net: every
   nnU-Net step runs as a subprocess of that environment;
3. writes the nnU-Net raw dataset under ``<workdir>/nnUNet_raw``: medseg's training cases in imagesTr/labelsTr
   (symlinks to the original files), the held-out (medseg validation) images in imagesTs;
4. runs ``nnUNetv2_plan_and_preprocess`` for 3d_fullres and writes ``splits_final.json`` so that fold 0 trains
   on all training cases (a small subset of them doubles as nnU-Net's internal validation set, which nnU-Net
   requires to be non-empty);
5. trains with ``nnUNetTrainer_medsegBudget``, a trainer written into the nnU-Net environment: short epochs, the
   number of epochs re-estimated from the measured epoch time so the poly learning-rate schedule decays over the
   budget, and a stop after the epoch that crosses the budget (medseg's ``train.max_minutes`` rule);
6. predicts the held-out images with and without test-time mirroring, timing each, and scores them with
   ``medseg.evaluation.evaluate_cases``;
7. optionally (``--with-medseg``) runs ``medseg train --data DIR train.max_minutes=M`` and ``medseg infer`` on
   the same held-out images (without and with mirroring);
8. prints one table (and ``<workdir>/peer_results.json``): training time, steps, held-out Dice per class,
   prediction seconds per case, and nnU-Net's pseudo Dice per epoch against elapsed seconds.

Nothing is written into the dataset folder. Re-running with the same ``--workdir`` reuses the nnU-Net
environment and, when the split is unchanged, the preprocessed data; training and prediction run again.
Subprocess output is echoed and kept in ``<workdir>/logs/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.data.datasets import Case
from medseg.errors import MedsegError
from medseg.evaluation import EvaluationResult, evaluate_cases, format_table
from medseg.workflows.preparation import prepare_labelled_run

TRAINER = "nnUNetTrainer_medsegBudget"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
FOLD = 0
EPOCHS_FILE = "medseg_budget_epochs.json"  # written by the trainer into the fold folder
STAMP_FILE = "medseg_peer_stamp.json"  # in the preprocessed dataset folder: what it was made from
# Test-time augmentation modes: name, extra arguments of the prediction command.
NNUNET_TTA_MODES: tuple[tuple[str, list[str]], ...] = (("mirroring", []), ("no mirroring", ["--disable_tta"]))
MEDSEG_TTA_MODES = ("no mirroring", "mirroring")  # mirroring along the axes the run was trained to flip

# The two constructor signatures nnUNetTrainer has had (parameter names after ``self``): recent releases (2.8.1
# checked) take ``device`` only; older v2 releases also take ``unpack_dataset``. The subclass must repeat them exactly:
# nnUNetTrainer.__init__ stores ``locals()[name]`` for every parameter name of ``type(self).__init__``.
KNOWN_SIGNATURES = {
    ("plans", "configuration", "fold", "dataset_json", "device"): ("", ""),
    ("plans", "configuration", "fold", "dataset_json", "unpack_dataset", "device"): (
        "\n                 unpack_dataset: bool = True,", " unpack_dataset,"),
}

TRAINER_SOURCE = '''"""nnUNetTrainer with a wall-clock budget, written by medseg's nnU-Net peer benchmark.

Epochs are short (MEDSEG_PEER_ITERATIONS training and MEDSEG_PEER_VAL_ITERATIONS validation iterations). After
every epoch the number of epochs is re-estimated from the mean epoch time so that the poly learning-rate schedule
decays to zero at the end of MEDSEG_PEER_BUDGET_MINUTES; training ends after the epoch that crosses the budget
and writes checkpoint_final.pth as usual. Epoch times, losses and pseudo Dice go to medseg_budget_epochs.json
in the fold folder. nnU-Net's final validation of its internal validation subset is skipped unless
MEDSEG_PEER_FINAL_VALIDATION=1 (the benchmark scores the held-out cases itself). Without
MEDSEG_PEER_BUDGET_MINUTES it trains like nnUNetTrainer, with the short epochs.
"""

import json
import math
import os
from time import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

EPOCHS_FILE = "medseg_budget_epochs.json"


def _number(value):
    value = float(value)
    return value if math.isfinite(value) else None


class nnUNetTrainer_medsegBudget(nnUNetTrainer):
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,__PARAMS__
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json,__ARGS__ device)
        minutes = os.environ.get("MEDSEG_PEER_BUDGET_MINUTES")
        self.budget_s = float(minutes) * 60.0 if minutes else None
        self.num_iterations_per_epoch = int(os.environ.get("MEDSEG_PEER_ITERATIONS", "25"))
        self.num_val_iterations_per_epoch = int(os.environ.get("MEDSEG_PEER_VAL_ITERATIONS", "5"))
        self.final_validation = os.environ.get("MEDSEG_PEER_FINAL_VALIDATION", "0") == "1"
        self.loop_start = None
        self.epoch_records = []

    def run_training(self):
        # nnUNetTrainer.run_training iterates over range(current_epoch, num_epochs), fixed when the loop starts;
        # here num_epochs changes during training, so the same steps run in a while loop.
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = []
                for _ in range(self.num_val_iterations_per_epoch):
                    val_outputs.append(self.validation_step(next(self.dataloader_val)))
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        self.on_train_end()

    def on_epoch_start(self):
        if self.loop_start is None:
            self.loop_start = time()
        super().on_epoch_start()

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()  # logs, checkpoints, current_epoch += 1
        elapsed = time() - self.loop_start
        get = self.logger.get_value
        self.epoch_records.append({
            "epoch": epoch,
            "elapsed_s": round(elapsed, 3),
            "epoch_s": round(float(get("epoch_end_timestamps", step=epoch) - get("epoch_start_timestamps", step=epoch)),
                             3),
            "iterations": (len(self.epoch_records) + 1) * self.num_iterations_per_epoch,
            "lr": _number(get("lrs", step=epoch)),
            "train_loss": _number(get("train_losses", step=epoch)),
            "val_loss": _number(get("val_losses", step=epoch)),
            "pseudo_dice": [_number(d) for d in get("dice_per_class_or_region", step=epoch)],
            "mean_pseudo_dice": _number(get("mean_fg_dice", step=epoch)),
            "ema_pseudo_dice": _number(get("ema_fg_dice", step=epoch)),
        })
        if self.budget_s is not None:
            done = len(self.epoch_records)
            if elapsed >= self.budget_s:
                self.num_epochs = self.current_epoch  # ends the loop; on_train_end writes checkpoint_final.pth
                self.print_to_log_file(f"budget of {self.budget_s / 60:.2f} min reached after {done} epochs "
                                       f"({elapsed:.1f} s)")
            else:
                # Never below current_epoch + 1: the poly schedule is (1 - epoch / max_steps) ** 0.9.
                planned = max(self.current_epoch + 1, math.ceil(self.budget_s / (elapsed / done)))
                self.num_epochs = planned
                self.lr_scheduler.max_steps = planned
                self.print_to_log_file(f"budget: {elapsed:.1f} of {self.budget_s:.0f} s used, {planned} epochs planned")
        self._write_records()

    def _write_records(self):
        if self.local_rank != 0:
            return
        record = {
            "budget_s": self.budget_s,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "batch_size": int(getattr(self, "batch_size", self.configuration_manager.batch_size)),
            "patch_size": [int(s) for s in self.configuration_manager.patch_size],
            "planned_epochs": int(self.num_epochs),
            "epochs": self.epoch_records,
        }
        path = os.path.join(self.output_folder, EPOCHS_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
        os.replace(path + ".tmp", path)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if not self.final_validation:
            self.print_to_log_file("final validation skipped (MEDSEG_PEER_FINAL_VALIDATION is not 1)")
            return
        super().perform_actual_validation(save_probabilities)
'''

PROBE_SOURCE = """
import importlib.metadata, inspect, json, os
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
print(json.dumps({
    "torch": torch.__version__, "torch_file": torch.__file__,
    "nnunetv2": importlib.metadata.version("nnunetv2"),
    "trainer_dir": os.path.dirname(inspect.getfile(nnUNetTrainer)),
    "init_params": list(inspect.signature(nnUNetTrainer.__init__).parameters)[1:],
}))
"""


class BenchmarkError(Exception):
    """A problem that ends the benchmark; printed as one line."""


@dataclass
class Split:
    """medseg's split of the dataset and what the nnU-Net dataset.json needs."""

    data_root: Path
    train: list[Case]
    held_out: list[Case]
    class_names: list[str]  # index = label value, 0 = background
    channel_name: str  # nnU-Net channel name: "CT" or "MRI"


@dataclass
class NnunetEnv:
    """The nnU-Net virtual environment and what its probe found."""

    venv: Path
    python: Path
    bin_dir: Path
    nnunet_version: str
    torch_version: str
    torch_file: str
    trainer_dir: Path
    init_params: list[str]


# -- small helpers ---------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_json_safe(value), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BenchmarkError(f"{path}: cannot read {what} ({exc})") from None


def _fresh_dir(path: Path) -> Path:
    """Empty ``path`` (a folder this benchmark owns inside the workdir) and create it."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path, echo: bool = True) -> float:
    """Run ``cmd``, copying its output to ``log_path`` (and the console); return its wall time in seconds."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shown = " ".join(cmd)
    print(f"$ {shown}\n  (log: {log_path})", flush=True)
    start = time.perf_counter()
    try:
        with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
            cmd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, encoding="utf-8", errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if echo:
                    sys.stdout.write(line)
            returncode = proc.wait()
    except OSError as exc:
        raise BenchmarkError(f"{cmd[0]}: cannot run ({exc})") from None
    wall = time.perf_counter() - start
    if returncode != 0:
        raise BenchmarkError(f"{Path(cmd[0]).name} {' '.join(cmd[1:3])} ... failed with exit status {returncode}; "
                             f"see {log_path}")
    return wall


def _find_constraints() -> Path | None:
    """medseg's constraints.txt: the first folder above this file that holds one."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "constraints.txt").is_file():
            return folder / "constraints.txt"
    return None


def _pinned_torch(constraints: Path) -> str:
    for line in constraints.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\s*torch\s*==\s*([^\s;#]+)", line)
        if match:
            return match.group(1)
    raise BenchmarkError(f"{constraints}: no 'torch==VERSION' line; the nnU-Net venv must use medseg's torch")


def _base_version(version: str) -> str:
    return version.split("+", 1)[0]


# -- 1. the split ----------------------------------------------------------------------------------------------


def split_like_medseg_train(data_dir: Path, minutes: float, workdir: Path) -> Split:
    """Training and held-out cases exactly as ``medseg train --data DIR train.max_minutes=M`` splits them.

    ``prepare_labelled_run`` only names its run folder; the name given here (inside the workdir) is never
    created. The split does not depend on the plan ``medseg train`` makes from the data (it is drawn first).
    """
    probe_dir = workdir / "medseg_split_probe"
    try:
        run = prepare_labelled_run("train", None, data_dir, probe_dir, [f"train.max_minutes={minutes}"],
                                   plan_for=None)
    except MedsegError as exc:
        raise BenchmarkError(str(exc)) from None
    names = list(run.config.data.class_names or [])
    if len(names) < 2:
        raise BenchmarkError(f"{data_dir}: dataset names no foreground classes (dataset.json 'labels')")
    foreground = names[1:]
    if len(set(foreground)) != len(foreground) or "background" in foreground:
        raise BenchmarkError(f"{data_dir}: class names must be unique and not 'background': {', '.join(names)}")
    channel = "CT" if run.config.data.modality == "ct" else "MRI"
    held_out = run.part("validation")
    if any(c.label is None for c in held_out + run.part("train")):
        raise BenchmarkError(f"{data_dir}: every case needs a label")
    return Split(Path(run.config.data.root or data_dir), run.part("train"), held_out, names, channel)


# -- 2. the nnU-Net environment -----------------------------------------------------------------------------------


def _own_site_packages() -> list[str]:
    paths = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    unique: list[str] = []
    for p in paths:
        if Path(p).is_dir() and p not in unique:
            unique.append(p)
    return unique


def _probe(python: Path, env: dict[str, str]) -> dict[str, Any] | None:
    """torch and nnU-Net as the venv sees them, or None when nnunetv2 does not import there."""
    result = subprocess.run([str(python), "-c", PROBE_SOURCE], env=env, capture_output=True, text=True,
                            encoding="utf-8", errors="replace", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return None
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def ensure_nnunet_venv(venv: Path, constraints: Path, spec: str, env: dict[str, str], log_dir: Path,
                       echo: bool = True) -> NnunetEnv:
    """Create ``venv`` (once) with this interpreter's site-packages on its path and nnunetv2 installed under
    ``PIP_CONSTRAINT=constraints``; check that its torch is the pinned one."""
    python = venv / "bin" / "python"
    if not python.is_file():
        print(f"creating the nnU-Net environment {venv}", flush=True)
        run_logged([sys.executable, "-m", "venv", str(venv)], env, log_dir / "venv.log", echo)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, encoding="utf-8", check=False).stdout.strip()
    if not purelib or not Path(purelib).is_dir():
        raise BenchmarkError(f"{venv}: not a usable virtual environment (no site-packages); delete it and rerun")
    # Appended to sys.path after the venv's own site-packages: what pip installs there wins, torch comes from here.
    (Path(purelib) / "medseg_site_packages.pth").write_text("\n".join(_own_site_packages()) + "\n", encoding="utf-8")
    found = _probe(python, env)
    if found is None:
        print(f"installing {spec} into {venv} (PIP_CONSTRAINT={constraints})", flush=True)
        run_logged([str(python), "-m", "pip", "install", spec], {**env, "PIP_CONSTRAINT": str(constraints)},
                   log_dir / "pip_install.log", echo)
        found = _probe(python, env)
        if found is None:
            raise BenchmarkError(f"{venv}: nnunetv2 or torch does not import after pip install; "
                                 f"see {log_dir / 'pip_install.log'}")
    wanted = _pinned_torch(constraints)
    if _base_version(str(found["torch"])) != _base_version(wanted):
        raise BenchmarkError(f"{venv}: torch {found['torch']} (from {found['torch_file']}), expected {wanted} as "
                             f"pinned in {constraints}; delete {venv} and rerun")
    nnunet = NnunetEnv(venv, python, venv / "bin", str(found["nnunetv2"]), str(found["torch"]),
                       str(found["torch_file"]), Path(found["trainer_dir"]), list(found["init_params"]))
    for script in ("nnUNetv2_plan_and_preprocess", "nnUNetv2_train", "nnUNetv2_predict"):
        if not (nnunet.bin_dir / script).is_file():
            raise BenchmarkError(f"{nnunet.bin_dir / script}: not found; delete {venv} and rerun")
    print(f"nnU-Net environment: nnunetv2 {nnunet.nnunet_version}, torch {nnunet.torch_version} "
          f"from {Path(nnunet.torch_file).parent}", flush=True)
    return nnunet


def install_trainer(nnunet: NnunetEnv) -> Path:
    """Write ``nnUNetTrainer_medsegBudget`` next to nnUNetTrainer.py, where nnU-Net looks trainers up by name,
    with the constructor signature of the installed nnUNetTrainer."""
    key = tuple(nnunet.init_params)
    if key not in KNOWN_SIGNATURES:
        raise BenchmarkError(f"nnunetv2 {nnunet.nnunet_version}: nnUNetTrainer.__init__ takes ({', '.join(key)}), "
                             "a signature this benchmark does not know; pin another version with --nnunet-spec")
    params, args = KNOWN_SIGNATURES[key]
    source = TRAINER_SOURCE.replace("__PARAMS__", params).replace("__ARGS__", args)
    path = nnunet.trainer_dir / f"{TRAINER}.py"
    path.write_text(source, encoding="utf-8")
    return path


def nnunet_env(workdir: Path, device: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with nnU-Net's three folders (and CUDA hidden on CPU runs)."""
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(workdir / "nnUNet_raw"),
        "nnUNet_preprocessed": str(workdir / "nnUNet_preprocessed"),
        "nnUNet_results": str(workdir / "nnUNet_results"),
    })
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.update(extra or {})
    return env


# -- 3. the raw dataset --------------------------------------------------------------------------------------------


def dataset_folder_name(dataset_id: int, data_root: Path) -> str:
    """``Dataset<ID>_<Name>`` with the name from the dataset folder (letters and digits only)."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", data_root.name) if part)
    return f"Dataset{dataset_id:03d}_{name or 'Data'}"


def _check_id_free(workdir: Path, dataset_id: int, folder: str) -> None:
    """nnU-Net refuses an ID used by two dataset folders; another dataset of this workdir may hold it."""
    for base in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        root = workdir / base
        if not root.is_dir():
            continue
        for other in root.glob(f"Dataset{dataset_id:03d}_*"):
            if other.name != folder:
                raise BenchmarkError(f"{other}: dataset ID {dataset_id} is taken by another dataset; "
                                     "pass another --dataset-id or another --workdir")


def _place(source: Path, target: Path) -> None:
    """``target`` (a .nii.gz name) as a symlink to ``source``, or a converted copy when it is another format."""
    if source.is_file() and source.name.lower().endswith(".nii.gz"):
        target.symlink_to(source.resolve())
        return
    import SimpleITK as sitk

    try:
        if source.is_dir():  # a DICOM series
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(source)))
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(source))
        sitk.WriteImage(image, str(target), useCompression=True)
    except RuntimeError as exc:
        raise BenchmarkError(f"{source}: cannot convert to NIfTI ({str(exc).strip().splitlines()[-1]})") from None


def write_raw_dataset(split: Split, raw_root: Path, folder: str) -> Path:
    """imagesTr/labelsTr (training cases), imagesTs (held-out images) and dataset.json; rebuilt every run."""
    dataset = _fresh_dir(raw_root / folder)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (dataset / sub).mkdir()
    for case in split.train:
        assert case.label is not None
        _place(case.image, dataset / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        _place(case.label, dataset / "labelsTr" / f"{case.case_id}.nii.gz")
    for case in split.held_out:
        _place(case.image, dataset / "imagesTs" / f"{case.case_id}_0000.nii.gz")
    labels = {"background": 0, **{name: value for value, name in enumerate(split.class_names[1:], start=1)}}
    _write_json(dataset / "dataset.json", {
        "name": folder.split("_", 1)[1],
        "description": f"medseg training split of {split.data_root} (held-out cases in imagesTs)",
        "channel_names": {"0": split.channel_name},
        "labels": labels,
        "numTraining": len(split.train),
        "file_ending": ".nii.gz",
    })
    return dataset


# -- 4. planning and preprocessing, splits_final.json ---------------------------------------------------------------


def _stamp(split: Split, nnunet: NnunetEnv) -> dict[str, Any]:
    return {
        "data_root": str(split.data_root),
        "train": [c.case_id for c in split.train],
        "held_out": [c.case_id for c in split.held_out],
        "class_names": split.class_names, "cpu_count": os.cpu_count(),
        "channel_name": split.channel_name,
        "nnunetv2": nnunet.nnunet_version,
        "configuration": CONFIGURATION,
    }


def plan_and_preprocess(nnunet: NnunetEnv, split: Split, workdir: Path, dataset_id: int, folder: str,
                        processes: int, env: dict[str, str], echo: bool = True) -> tuple[Path, float | None]:
    """Run nnUNetv2_plan_and_preprocess unless the preprocessed data of this very split is there already.
    Returns the preprocessed dataset folder and the seconds it took (None when reused)."""
    preprocessed = workdir / "nnUNet_preprocessed" / folder
    stamp_path = preprocessed / STAMP_FILE
    stamp = _stamp(split, nnunet)
    if (stamp_path.is_file() and _read_json(stamp_path, "stamp") == stamp and (preprocessed / f"{PLANS}.json").is_file()
            and (preprocessed / f"{PLANS}_{CONFIGURATION}").is_dir()):
        print(f"reusing the preprocessed data in {preprocessed}", flush=True)
        return preprocessed, None
    if preprocessed.exists():
        shutil.rmtree(preprocessed)
    seconds = run_logged([
        str(nnunet.bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", CONFIGURATION,
        "-np", str(processes), "-npfp", str(processes), "--verify_dataset_integrity", "--no_pbar",
    ], env, workdir / "logs" / "plan_and_preprocess.log", echo)
    if not (preprocessed / f"{PLANS}.json").is_file():
        raise BenchmarkError(f"{preprocessed / (PLANS + '.json')}: not written by nnUNetv2_plan_and_preprocess")
    _write_json(stamp_path, stamp)
    return preprocessed, seconds


def write_splits(preprocessed: Path, train_ids: list[str], val_fraction: float, seed: int = 0) -> list[str]:
    """splits_final.json whose fold 0 trains on every training case and validates on a seeded subset of them
    (nnU-Net's per-epoch pseudo Dice needs a non-empty validation set; the held-out cases stay unseen)."""
    count = max(1, round(len(train_ids) * val_fraction))
    val = sorted(random.Random(seed).sample(sorted(train_ids), count))
    _write_json(preprocessed / "splits_final.json", [{"train": sorted(train_ids), "val": val}])
    return val


# -- 5. training -----------------------------------------------------------------------------------------------------


def train_nnunet(nnunet: NnunetEnv, workdir: Path, dataset_id: int, folder: str, device: str,
                 env: dict[str, str], echo: bool = True) -> dict[str, Any]:
    """Train fold 0 with the budget trainer; return the process wall time and the per-epoch records."""
    fold_dir = (workdir / "nnUNet_results" / folder / f"{TRAINER}__{PLANS}__{CONFIGURATION}" / f"fold_{FOLD}")
    if fold_dir.exists():
        shutil.rmtree(fold_dir)
    seconds = run_logged([
        str(nnunet.bin_dir / "nnUNetv2_train"), str(dataset_id), CONFIGURATION, str(FOLD), "-tr", TRAINER,
        "-device", device,
    ], env, workdir / "logs" / "nnunet_train.log", echo)
    if not (fold_dir / "checkpoint_final.pth").is_file():
        raise BenchmarkError(f"{fold_dir / 'checkpoint_final.pth'}: not written; see {workdir / 'logs'}")
    record = _read_json(fold_dir / EPOCHS_FILE, "the trainer's epoch record")
    epochs = record.get("epochs") or []
    if not epochs:
        raise BenchmarkError(f"{fold_dir / EPOCHS_FILE}: no epoch recorded")
    return {"process_s": seconds, "fold_dir": str(fold_dir), **record}


# -- 6. prediction and scoring ------------------------------------------------------------------------------------


def score(pred_dir: Path, cases: list[Case], class_names: list[str], output_json: Path) -> EvaluationResult:
    """medseg's metrics of ``pred_dir/<case>.nii.gz`` against the held-out labels."""
    matched = []
    for case in cases:
        assert case.label is not None
        prediction = pred_dir / f"{case.case_id}.nii.gz"
        if not prediction.is_file():
            raise BenchmarkError(f"{prediction}: prediction missing")
        matched.append((case.case_id, prediction, case.label))
    try:
        return evaluate_cases(matched, dict(enumerate(class_names[1:], start=1)), output_json, include_hd95=False)
    except MedsegError as exc:
        raise BenchmarkError(str(exc)) from None


def predict_nnunet(nnunet: NnunetEnv, workdir: Path, dataset_id: int, images_ts: Path, device: str,
                   processes: int, env: dict[str, str], echo: bool = True) -> dict[str, tuple[Path, float]]:
    """Predict the held-out images with and without mirroring; prediction folder and wall seconds per mode."""
    done = {}
    for mode, flags in NNUNET_TTA_MODES:
        out = _fresh_dir(workdir / "predictions" / f"nnunet_{mode.replace(' ', '_')}")
        seconds = run_logged([
            str(nnunet.bin_dir / "nnUNetv2_predict"), "-i", str(images_ts), "-o", str(out), "-d", str(dataset_id),
            "-c", CONFIGURATION, "-f", str(FOLD), "-tr", TRAINER, "-chk", "checkpoint_final.pth", "-device", device,
            "-npp", str(processes), "-nps", str(processes), "--disable_progress_bar", *flags,
        ], env, workdir / "logs" / f"nnunet_predict_{mode.replace(' ', '_')}.log", echo)
        done[mode] = (out, seconds)
    return done


# -- 7. medseg ---------------------------------------------------------------------------------------------------


def _medseg_command() -> list[str]:
    script = Path(sys.executable).parent / "medseg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "medseg.cli"]


def run_medseg(split: Split, data_dir: Path, workdir: Path, minutes: float, device: str, images_ts: Path,
               echo: bool = True) -> dict[str, Any]:
    """``medseg train --data DIR train.max_minutes=M``, then ``medseg infer`` on the held-out images, timed."""
    from medseg.engine.checkpoint import load_checkpoint

    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    run_dir = workdir / "medseg_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    train_s = run_logged([*_medseg_command(), "train", "--data", str(data_dir), "--output", str(run_dir),
                          f"train.max_minutes={minutes}", "train.final_validation=false"], env,
                         workdir / "logs" / "medseg_train.log", echo)
    saved_split = _read_json(run_dir / "split.json", "medseg's split")
    if sorted(saved_split.get("validation", [])) != sorted(c.case_id for c in split.held_out):
        raise BenchmarkError(f"{run_dir / 'split.json'}: medseg train held out other cases than this benchmark")
    try:
        state = load_checkpoint(run_dir / "last.pt")
    except MedsegError as exc:
        raise BenchmarkError(str(exc)) from None
    curve = []
    log_path = run_dir / "train_log.jsonl"
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if "val_mean_dice" in row:
                curve.append({"epoch": row["epoch"], "elapsed_s": round(60.0 * row.get("elapsed_min", math.nan), 3),
                              "mean_dice": row["val_mean_dice"]})
    flips = state.get("config", {}).get("data", {}).get("augment", {}).get("flip_axes", [])
    predictions = {}
    for mode in MEDSEG_TTA_MODES:
        if mode == "mirroring" and not flips:
            continue  # the run never saw flipped images: mirrored predictions would swap lateral classes
        overrides = [f"infer.mirror_axes={json.dumps(flips)}"] if mode == "mirroring" else []
        out = _fresh_dir(workdir / "predictions" / f"medseg_{mode.replace(' ', '_')}")
        seconds = run_logged([*_medseg_command(), "infer", "--model", str(run_dir), "-i", str(images_ts), "-o",
                              str(out), "--device", device, "--checkpoint", "last.pt", "--overwrite", "--no-progress",
                              *overrides], env,
                             workdir / "logs" / f"medseg_infer_{mode.replace(' ', '_')}.log", echo)
        predictions[mode] = (out, seconds)
    return {
        "run_dir": str(run_dir), "process_s": train_s, "loop_s": float(state.get("elapsed_s", math.nan)),
        "epochs": int(state.get("epoch", 0)), "steps": int(state.get("global_step", 0)),
        "batch_size": state.get("config", {}).get("train", {}).get("batch_size"),
        "curve": curve, "predictions": predictions,
    }


# -- 8. the table --------------------------------------------------------------------------------------------------


def _dice_by_class(summary: dict) -> dict[str, float]:
    return {name: entry.get("dice", math.nan) for name, entry in summary.get("per_class", {}).items()}


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def format_results(rows: list[dict[str, Any]], class_names: list[str]) -> str:
    """One line per method and test-time augmentation."""
    header = ["method", "TTA", "budget min", "train loop min", "train process min", "epochs", "steps", "batch",
              "mean Dice", *(f"Dice {n}" for n in class_names[1:]), "pred s/case"]
    body = []
    for r in rows:
        body.append([
            r["method"], r["tta"], _fmt(r["budget_min"], 1), _fmt(r["train_loop_s"] / 60.0, 2),
            _fmt(r["train_process_s"] / 60.0, 2), _fmt(r["epochs"], 0), _fmt(r["steps"], 0), _fmt(r["batch_size"], 0),
            _fmt(r["mean_dice"], 4), *(_fmt(r["dice"].get(n, math.nan), 4) for n in class_names[1:]),
            _fmt(r["predict_s_per_case"], 2),
        ])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *(line(b) for b in body)])


def format_curve(epochs: list[dict[str, Any]], class_names: list[str]) -> str:
    """nnU-Net's pseudo Dice (on its internal validation subset) per epoch against elapsed seconds."""
    lines = [f"{'epoch':>5}  {'elapsed s':>9}  {'lr':>8}  {'pseudo Dice':>11}  {'EMA':>6}  "
             + "  ".join(f"{n:>10}" for n in class_names[1:])]
    for e in epochs:
        lines.append(f"{e['epoch']:>5}  {e['elapsed_s']:>9.1f}  {_fmt(e.get('lr'), 5):>8}  "
                     f"{_fmt(e.get('mean_pseudo_dice'), 4):>11}  {_fmt(e.get('ema_pseudo_dice'), 4):>6}  "
                     + "  ".join(f"{_fmt(d, 4):>10}" for d in e.get("pseudo_dice") or []))
    return "\n".join(lines)


# -- the command -----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__spec__.name}" if __spec__ is not None else Path(__file__).name,
        description="Train nnU-Net v2 (and optionally medseg) on medseg's split for the same minutes; "
                    "score both on the held-out cases with medseg's evaluation.")
    parser.add_argument("--data", required=True, help="labelled dataset folder (any layout medseg reads)")
    parser.add_argument("--minutes", type=float, required=True, help="training wall-clock budget per method")
    parser.add_argument("--workdir", required=True, help="folder for the nnU-Net venv, data, runs and results")
    parser.add_argument("--with-medseg", action="store_true", help="also train and time medseg on the same split")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for both methods")
    parser.add_argument("--dataset-id", type=int, default=950, help="nnU-Net dataset ID (default 950)")
    parser.add_argument("--iterations-per-epoch", type=int, default=25, help="nnU-Net training iterations/epoch")
    parser.add_argument("--val-iterations", type=int, default=5, help="nnU-Net validation iterations per epoch")
    parser.add_argument("--nnunet-val-fraction", type=float, default=0.1,
                        help="share of the training cases nnU-Net also validates on each epoch (at least one)")
    parser.add_argument("--processes", type=int, default=2,
                        help="worker processes for nnU-Net planning/preprocessing and prediction (-np, -npp, -nps)")
    parser.add_argument("--nnunet-spec", default="nnunetv2", help="pip requirement to install (default: nnunetv2)")
    parser.add_argument("--constraints", default=None,
                        help="pip constraints for the nnU-Net venv (default: medseg's constraints.txt)")
    parser.add_argument("--stop-after", choices=["setup", "preprocess", "train"],
                        help="stop after the venv and raw dataset, after preprocessing, or after training")
    parser.add_argument("--quiet", action="store_true", help="keep subprocess output in <workdir>/logs only")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    if not 1 <= args.dataset_id <= 999:
        parser.error("--dataset-id must be between 1 and 999")
    if args.iterations_per_epoch < 1 or args.val_iterations < 1 or args.processes < 1:
        parser.error("--iterations-per-epoch, --val-iterations and --processes must be at least 1")
    if not 0.0 < args.nnunet_val_fraction < 1.0:
        parser.error("--nnunet-val-fraction must be between 0 and 1")
    return args


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every step of the module docstring; returns what peer_results.json holds."""
    data_dir = Path(args.data).resolve()
    workdir = Path(args.workdir).resolve()
    if workdir == data_dir or data_dir in workdir.parents:
        raise BenchmarkError(f"{workdir}: the workdir must not be inside the dataset folder {data_dir}")
    constraints = Path(args.constraints).resolve() if args.constraints else _find_constraints()
    if constraints is None or not constraints.is_file():
        raise BenchmarkError(f"{constraints or 'constraints.txt'}: not found; pass --constraints FILE")
    echo = not args.quiet
    results_path = workdir / "peer_results.json"

    split = split_like_medseg_train(data_dir, args.minutes, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"{split.data_root}: {len(split.train)} training and {len(split.held_out)} held-out cases "
          f"(medseg train's split), classes {', '.join(split.class_names[1:])}, channel {split.channel_name}",
          flush=True)
    base_env = nnunet_env(workdir, args.device)
    nnunet = ensure_nnunet_venv(workdir / "nnunet_venv", constraints, args.nnunet_spec, base_env, workdir / "logs",
                                echo)
    trainer_file = install_trainer(nnunet)
    print(f"trainer {TRAINER}: {trainer_file}", flush=True)
    folder = dataset_folder_name(args.dataset_id, split.data_root)
    _check_id_free(workdir, args.dataset_id, folder)
    raw = write_raw_dataset(split, workdir / "nnUNet_raw", folder)
    print(f"nnU-Net raw dataset: {raw}", flush=True)
    results: dict[str, Any] = {
        "data": str(split.data_root), "minutes": args.minutes, "device": args.device, "workdir": str(workdir),
        "class_names": split.class_names, "cpu_count": os.cpu_count(),
        "split": {"train": [c.case_id for c in split.train], "held_out": [c.case_id for c in split.held_out]},
        "nnunet_environment": {"venv": str(nnunet.venv), "nnunetv2": nnunet.nnunet_version,
                               "torch": nnunet.torch_version, "torch_file": nnunet.torch_file,
                               "trainer_file": str(trainer_file), "dataset": folder},
        "rows": [], "curves": {},
    }
    if args.stop_after == "setup":
        _write_json(results_path, results)
        return results

    preprocessed, preprocess_s = plan_and_preprocess(nnunet, split, workdir, args.dataset_id, folder, args.processes,
                                                     base_env, echo)
    internal_val = write_splits(preprocessed, [c.case_id for c in split.train], args.nnunet_val_fraction)
    results["nnunet"] = {"preprocess_s": preprocess_s, "internal_val": internal_val}
    if args.stop_after == "preprocess":
        _write_json(results_path, results)
        return results

    train_env = nnunet_env(workdir, args.device, {
        "MEDSEG_PEER_BUDGET_MINUTES": str(args.minutes),
        "MEDSEG_PEER_ITERATIONS": str(args.iterations_per_epoch),
        "MEDSEG_PEER_VAL_ITERATIONS": str(args.val_iterations),
    })
    trained = train_nnunet(nnunet, workdir, args.dataset_id, folder, args.device, train_env, echo)
    epochs = trained["epochs"]
    results["nnunet"].update({k: v for k, v in trained.items() if k != "epochs"})
    results["curves"]["nnunet_pseudo_dice"] = epochs
    if args.stop_after == "train":
        _write_json(results_path, results)
        return results

    predictions = predict_nnunet(nnunet, workdir, args.dataset_id, raw / "imagesTs", args.device, args.processes,
                                 base_env, echo)
    n_cases = len(split.held_out)
    for mode, (out, seconds) in predictions.items():
        evaluation = score(out, split.held_out, split.class_names,
                           workdir / "scores" / f"nnunet_{mode.replace(' ', '_')}.json")
        print(f"\nnnU-Net {CONFIGURATION}, {mode}, held-out cases:\n{format_table(evaluation)}", flush=True)
        results["rows"].append({
            "method": f"nnU-Net {nnunet.nnunet_version} {CONFIGURATION}", "tta": mode, "budget_min": args.minutes,
            "train_loop_s": epochs[-1]["elapsed_s"], "train_process_s": trained["process_s"],
            "epochs": len(epochs), "steps": epochs[-1]["iterations"], "batch_size": trained.get("batch_size"),
            "mean_dice": evaluation.summary["mean_dice"], "dice": _dice_by_class(evaluation.summary),
            "predict_s_total": seconds, "predict_s_per_case": seconds / n_cases, "cases": n_cases,
        })
    _write_json(results_path, results)

    if args.with_medseg:
        medseg = run_medseg(split, data_dir, workdir, args.minutes, args.device, raw / "imagesTs", echo)
        results["curves"]["medseg_val_dice"] = medseg["curve"]
        results["medseg"] = {k: v for k, v in medseg.items() if k not in ("curve", "predictions")}
        for mode, (out, seconds) in medseg["predictions"].items():
            evaluation = score(out, split.held_out, split.class_names,
                               workdir / "scores" / f"medseg_{mode.replace(' ', '_')}.json")
            print(f"\nmedseg, {mode}, held-out cases:\n{format_table(evaluation)}", flush=True)
            summary = evaluation.summary
            results["rows"].append({
                "method": "medseg", "tta": mode, "budget_min": args.minutes, "train_loop_s": medseg["loop_s"],
                "train_process_s": medseg["process_s"], "epochs": medseg["epochs"], "steps": medseg["steps"],
                "batch_size": medseg["batch_size"], "mean_dice": summary.get("mean_dice", math.nan),
                "dice": _dice_by_class(summary),
                "predict_s_total": seconds, "predict_s_per_case": seconds / n_cases, "cases": n_cases,
            })
        _write_json(results_path, results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = benchmark(args)
    except BenchmarkError as exc:
        print(f"{Path(__file__).stem}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{Path(__file__).stem}: interrupted", file=sys.stderr)
        return 130
    names = results["class_names"]
    if results.get("curves", {}).get("nnunet_pseudo_dice"):
        print("\nnnU-Net pseudo Dice per epoch (its internal validation subset of the training cases):")
        print(format_curve(results["curves"]["nnunet_pseudo_dice"], names))
    if results.get("curves", {}).get("medseg_val_dice"):
        print("\nmedseg validation mean Dice per epoch (held-out cases, on its resampled grid):")
        for point in results["curves"]["medseg_val_dice"]:
            print(f"{point['epoch']:>5}  {point['elapsed_s']:>9.1f}  {_fmt(point['mean_dice'], 4):>8}")
    if results["rows"]:
        print(f"\nheld-out cases: {results['rows'][0]['cases']}; training budget {args.minutes} min each; "
              "train loop = the budgeted epochs, process = the whole training command\n")
        print(format_results(results["rows"], names))
        print("both predict with the weights of their last epoch (medseg last.pt, nnU-Net checkpoint_final.pth); "
              "neither chose a checkpoint on the held-out cases")
    print(f"\nresults: {Path(results['workdir']) / 'peer_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
