"""Nothing is downloaded at run time: ``medseg infer`` runs in a process whose every network call fails."""

import subprocess
import sys

import numpy as np

from tests.helpers import write_nifti

NO_NETWORK = '''
import socket

def _refuse(*args, **kwargs):
    raise OSError("network access attempted during an offline run")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
socket.getaddrinfo = _refuse
'''


def test_infer_runs_with_networking_disabled(tiny_run, tmp_path):
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    image = write_nifti(tmp_path / "scan.nii.gz", np.full((24, 22, 12), -500, np.int16))
    probe = subprocess.run([sys.executable, "-c", "import socket; socket.getaddrinfo('pypi.org', 443)"],
                           capture_output=True, text=True, env={"PYTHONPATH": str(guard)})
    assert probe.returncode != 0 and "offline run" in probe.stderr  # the guard is in force
    result = subprocess.run([sys.executable, "-m", "medseg.cli", "infer", "--model", str(tiny_run), "-i", str(image),
                             "-o", str(tmp_path / "out"), "--device", "cpu", "--no-progress"],
                            capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(guard), "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "scan.nii.gz").is_file()
