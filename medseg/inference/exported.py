"""Networks loaded from a ``medseg export`` folder: TorchScript or ONNX (through onnxruntime), and the
sidecar that says how to preprocess and predict exactly as ``medseg infer`` does with the run.

An export folder holds ``medseg_export.json`` and one file per network (``network_<i>.pt`` or
``.onnx``). Nothing in it is executed as Python: TorchScript files are compiled graphs, ONNX files
are graphs run by onnxruntime, and the sidecar is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import MedsegError

SIDECAR = "medseg_export.json"
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def is_export(path: str | Path) -> bool:
    return (Path(path) / SIDECAR).is_file()


def read_sidecar(export_dir: Path) -> dict[str, Any]:
    """The sidecar of an export folder, checked for what loading needs."""
    path = export_dir / SIDECAR
    try:
        sidecar = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise MedsegError(f"{path}: not a readable export sidecar ({error})") from None
    missing = [key for key in ("format", "networks", "config", "class_names") if key not in sidecar]
    if missing or sidecar.get("format") not in SUFFIX:
        raise MedsegError(f"{path}: not a medseg export (missing {', '.join(missing) or 'a known format'})")
    for network in sidecar["networks"]:
        if not (export_dir / network["file"]).is_file():
            raise MedsegError(f"{export_dir / network['file']}: network file of the export is missing")
    return sidecar


class OnnxNetwork(nn.Module):
    """An ONNX graph run by onnxruntime behind the ``nn.Module`` call the strategies make; it holds no
    parameters, only an empty buffer that tells the strategy which device its tensors go to."""

    def __init__(self, path: Path, device: torch.device) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError:
            raise MedsegError(f"{path}: running an ONNX export needs onnxruntime (pip install onnxruntime)") from None
        available = onnxruntime.get_available_providers()
        wanted = ["CUDAExecutionProvider"] if device.type == "cuda" else []
        providers = [p for p in wanted if p in available] + ["CPUExecutionProvider"]
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.register_buffer("device_anchor", torch.zeros(0, device=device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input_name: x.detach().float().cpu().numpy()})
        return torch.from_numpy(np.asarray(logits)).to(x.device)


def load_networks(export_dir: Path, sidecar: dict[str, Any], device: torch.device) -> list[nn.Module]:
    """The export's networks, ready for ``Segmenter.use_exported``."""
    networks: list[nn.Module] = []
    for entry in sidecar["networks"]:
        path = export_dir / entry["file"]
        if sidecar["format"] == "onnx":
            networks.append(OnnxNetwork(path, device))
            continue
        try:
            networks.append(torch.jit.load(str(path), map_location=device).eval())
        except RuntimeError as error:
            raise MedsegError(f"{path}: not a TorchScript network ({str(error).splitlines()[0]})") from None
    return networks
