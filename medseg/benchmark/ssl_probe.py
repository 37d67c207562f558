"""Linear probes of a Swin UNETR encoder: how much of the segmentation its frozen features already hold.

Fine-tuning Dice mixes two things: what the pretrained encoder knows, and how fast the decoder and the
encoder learn from the labels. A linear probe isolates the first. The encoder is frozen; the outputs
of its five stages (``swinViT(x, normalize=True)``) are upsampled to the first stage's grid (half the
input) and concatenated; one linear layer per voxel (a 1x1x1 convolution, softmax over the classes) is
fitted on a fine-tuning run's training cases with Dice + cross-entropy, and scored by Dice on that run's
validation cases, its logits upsampled to the input grid. The same probe on the same architecture with
random weights is the baseline: features the pretraining taught show as a higher probe Dice.

    python -m medseg.benchmark.ssl_probe --run runs/ssl/scratch_seed0 --pretrained runs/ssl/pretraining
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Compose, SpatialPadd
from torch import nn

from medseg.benchmark.command_line import print_report
from medseg.config import Config
from medseg.data.datasets import Case, loader_items
from medseg.data.transforms import preprocessing
from medseg.errors import MedsegError
from medseg.losses import SoftmaxDiceCE
from medseg.metrics import segmentation_metrics
from medseg.networks import build_network_3d
from medseg.networks.volumetric import SwinUNETRWithEncoder
from medseg.ssl.transfer import load_pretrained_encoder, pretrained_window_size
from medseg.workflows.preparation import resume_labelled_run

PROBE_STEPS = 300
PROBE_LR = 0.01


@dataclass
class ProbeResult:
    """Held-out mean Dice of the probe (each case's mean over the classes it or the probe holds), and
    its per-class means."""

    mean_dice: float
    class_dice: list[float]


def encoder_features(encoder: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Every stage's output of the frozen ``encoder`` for one image [C, D, H, W], upsampled to the first
    stage's grid and concatenated: [features, D/2, H/2, W/2]."""
    with torch.inference_mode():
        stages = encoder(image[None], normalize=True)
        size = stages[0].shape[2:]
        return torch.cat([F.interpolate(s, size=size, mode="trilinear", align_corners=False) if s.shape[2:] != size
                          else s for s in stages], dim=1)[0]


def _volumes(config: Config, cases: list[Case]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(image, label) of each case, preprocessed as the run trained, padded to its patch."""
    steps = Compose([*preprocessing(config.data), SpatialPadd(("image", "label"), config.patch.patch_size)])
    out = []
    for item in loader_items(cases):
        data = steps(item)
        out.append((torch.as_tensor(data["image"]).float(), torch.as_tensor(data["label"]).long()))
    return out


def fit_probe(features: list[torch.Tensor], labels: list[torch.Tensor], classes: int, seed: int = 0,
              steps: int = PROBE_STEPS) -> nn.Conv3d:
    """A 1x1x1 convolution from the features [F, d, h, w] to class logits, fitted full-batch with Adam on
    Dice + cross-entropy against ``labels`` [1, d, h, w] (the first stage's grid)."""
    torch.manual_seed(seed)
    x = torch.stack(features)
    y = torch.stack(labels)
    probe = nn.Conv3d(x.shape[1], classes, kernel_size=1)
    optimizer = torch.optim.Adam(probe.parameters(), lr=PROBE_LR)
    loss = SoftmaxDiceCE()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(probe(x), y).backward()
        optimizer.step()
    return probe.eval()


def _probe_grid(label: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(label[None].float(), size=size, mode="nearest")[0].long()


def probe_encoder(encoder: nn.Module, train: list[tuple[torch.Tensor, torch.Tensor]],
                  held_out: list[tuple[torch.Tensor, torch.Tensor]], classes: int, seed: int = 0) -> ProbeResult:
    """Fit a linear probe on ``encoder``'s frozen features of ``train`` and score it on ``held_out``."""
    encoder.eval()
    features = [encoder_features(encoder, image) for image, _ in train]
    # Standardised per feature on the training cases, so that one learning rate suits every stage.
    stacked = torch.stack(features)
    mean, std = stacked.mean(dim=(0, 2, 3, 4), keepdim=True)[0], stacked.std(dim=(0, 2, 3, 4), keepdim=True)[0]
    del stacked
    features = [(f - mean) / (std + 1e-6) for f in features]
    labels = [_probe_grid(label, f.shape[1:]) for f, (_, label) in zip(features, train)]
    probe = fit_probe(features, labels, classes, seed)
    dices = []
    with torch.inference_mode():
        for image, label in held_out:
            grid = (encoder_features(encoder, image) - mean) / (std + 1e-6)
            logits = F.interpolate(probe(grid[None]), size=label.shape[1:], mode="trilinear", align_corners=False)
            prediction = logits[0].argmax(0)
            dices.append(segmentation_metrics(prediction, label[0], classes, include_hd95=False)["dice"])
    per_class = torch.as_tensor(np.stack(dices), dtype=torch.float64)
    case_means = torch.nanmean(per_class, dim=1)
    return ProbeResult(float(torch.nanmean(case_means)), torch.nanmean(per_class, dim=0).tolist())


def probe_run(run_dir: Path, pretrained: Path, seed: int = 0) -> dict[str, ProbeResult]:
    """Linear probes on the cases of the fine-tuning run ``run_dir`` (its config, training and validation
    cases): the encoder with random weights (seeded) and the encoder of ``pretrained``."""
    run = resume_labelled_run("train", run_dir, [], required=("config.yaml", "split.json"))
    config = run.config
    if config.model.network != "swin_unetr":
        raise MedsegError(f"{run_dir}: a {config.model.network} run; the probe reads a Swin UNETR encoder")
    config.model.window_size = pretrained_window_size(pretrained)  # both arms alike: the pretrained window
    classes = len(config.data.class_names or [])
    train, held_out = _volumes(config, run.part("train")), _volumes(config, run.part("validation"))
    results = {}
    for arm in ("random", "pretrained"):
        torch.manual_seed(seed)
        network = build_network_3d(config.model, 1, classes, config.patch.patch_size)
        assert isinstance(network, SwinUNETRWithEncoder)  # the builder of model.network=swin_unetr makes one
        if arm == "pretrained":
            load_pretrained_encoder(network, pretrained)
        results[arm] = probe_encoder(network.encoder, train, held_out, classes, seed)
    return results


def probe_table(results: dict[str, ProbeResult], class_names: list[str]) -> str:
    """The probes as a Markdown table, one row per encoder."""
    header = ["encoder", *class_names[1:], "mean Dice"]
    rows = [[arm, *(f"{d:.3f}" for d in r.class_dice), f"**{r.mean_dice:.3f}**"] for arm, r in results.items()]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="a Swin UNETR fine-tuning run folder (its cases)")
    parser.add_argument("--pretrained", required=True, type=Path, help="the medseg pretrain run folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    def probes() -> str:
        results = probe_run(args.run, args.pretrained, args.seed)
        run = resume_labelled_run("train", args.run, [], required=("config.yaml", "split.json"))
        return probe_table(results, list(run.config.data.class_names or []))

    return print_report(probes)


if __name__ == "__main__":
    sys.exit(main())
