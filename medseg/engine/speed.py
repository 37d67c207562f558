"""Per-step speed settings of the Trainer: memory format, CPU bf16 autocast and ``torch.compile``.

Each was measured before adoption (``python -m medseg.benchmark``): on a 2-core AVX2 CPU the
channels-last format made a 3D U-Net step 1.25x faster with the same loss, so it is on by default; bf16
autocast there was 14x slower (no native bf16: it is emulated), so it is refused on CPUs without AMX or
AVX512-BF16. On a 2-core Xeon with AMX-BF16 it gave 1.5x the samples/s of channels-last fp32 for the
planned OpenKBP patch U-Net, 1.8x for the V-Net, 1.15x for the 2D U-Net and little for the narrow
hippocampus U-Net (with the same held-out Dice as fp32 there, side by side), so the planner turns it
on where the CPU has it.
Compiling gave 5% for about 30 s of compilation, so it is opt-in.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from medseg.errors import MedsegError
from medseg.hardware import cpu_has_native_bf16


def check_cpu_bf16(enabled: bool, device: torch.device) -> None:
    """Refuse ``train.cpu_bf16`` where it would run emulated, many times slower than fp32."""
    if enabled and device.type == "cpu" and not cpu_has_native_bf16():
        raise MedsegError("config key 'train.cpu_bf16': this CPU has no native bf16 (AMX or AVX512-BF16); "
                          "emulated bf16 is many times slower than fp32 here")


def channels_last_(module: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights in the channels-last format (3D and 2D), in place, before the optimizer sees
    them; other parameters are left as they are."""
    for parameter in module.parameters():
        if parameter.dim() == 5:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last_3d)
        elif parameter.dim() == 4:
            parameter.data = parameter.data.contiguous(memory_format=torch.channels_last)
    return module


def channels_last_input(tensor: torch.Tensor) -> torch.Tensor:
    """A batch of volumes or slices in the format the channels-last weights expect."""
    if tensor.dim() == 5:
        return tensor.contiguous(memory_format=torch.channels_last_3d)
    if tensor.dim() == 4:
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


def autocast(device: torch.device, cuda_amp: bool, cpu_bf16: bool) -> AbstractContextManager:
    """fp16 autocast on CUDA with ``train.amp``; bf16 autocast on a CPU with ``train.cpu_bf16``."""
    if device.type == "cuda":
        return torch.autocast("cuda", enabled=cuda_amp)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16)
