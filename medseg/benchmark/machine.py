"""The machine a benchmark ran on, in words, so that every figure it writes says where it came from."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_machine() -> str:
    """For example ``AMD EPYC, 2 cores, no GPU, torch 2.14.1``."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_name()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__.split('+')[0]}"


def provenance() -> dict[str, str]:
    """The command line, machine and UTC date to store beside a benchmark's figures."""
    spec = sys.modules["__main__"].__spec__
    command = f"python -m {spec.name}" if spec else f"python {sys.argv[0]}"
    return {"command": " ".join([command, *sys.argv[1:]]), "machine": describe_machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
