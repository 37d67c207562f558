"""What the machine a run plans and trains on can do, read from the operating system."""

from __future__ import annotations

from functools import cache
from pathlib import Path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (Linux ``/proc/cpuinfo`` flags): without it, bf16 is
    emulated and many times slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8").split()
    except OSError:
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)
