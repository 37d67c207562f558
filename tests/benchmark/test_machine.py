"""Benchmark figures carry the command, machine and date they came from."""

import json
import os
import subprocess
import sys

import torch

from medseg.benchmark.machine import describe_machine


def test_the_machine_names_its_cores_and_torch():
    words = describe_machine()
    assert f"{os.cpu_count()} cores" in words
    assert f"torch {torch.__version__.split('+')[0]}" in words


def test_provenance_keeps_the_arguments_machine_and_date():
    code = "from medseg.benchmark.machine import provenance; import json; print(json.dumps(provenance()))"
    out = subprocess.run([sys.executable, "-c", code, "--slices", "280"], capture_output=True, text=True, check=True)
    record = json.loads(out.stdout)
    assert record["command"].endswith("--slices 280")
    assert record["machine"] == describe_machine()
    assert record["date"].endswith("UTC")
