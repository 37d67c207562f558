"""``python -m medseg.benchmark.ssl``: pretraining on the training cases' images only, then both arms
fine-tuned per seed on the same labelled fraction, and one report with mean ± std."""

import json
import re

from medseg.benchmark.ssl import main, mean_std
from tests.helpers import TINY, TINY_COMMON

PRETRAIN = [*TINY_COMMON, "model.network=swin_unetr", "model.size=tiny", "pretrain.patch_size=[32,32,32]",
            "pretrain.mask_block=8", "data.spacing=[3.0,3.0,3.0]", "data.modality=ct", "train.batch_size=2",
            "pretrain.embedding_dim=32", "data.val_fraction=0.25"]
FINETUNE = [*TINY, "model.network=swin_unetr", "model.size=tiny", "patch.patch_size=[64,64,64]", "data.modality=ct",
            "train.final_validation=true", "train.val_every=1", "data.spacing=[3.0,3.0,3.0]"]


def test_both_arms_over_two_seeds(phantom_dir, tmp_path, capsys):
    output = tmp_path / "ssl"
    args = ["--data", str(phantom_dir), "--output", str(output), "--seeds", "0,1", "--fraction", "0.5",
            "--finetune-epochs", "1", "--pretrain-minutes", "1",
            *(f"--pretrain-override={o}" for o in PRETRAIN), *FINETUNE]
    assert main(args) == 0
    held_out = set((output / "scratch_seed0" / "split.json").read_text().split('"validation"')[1].split("]")[0]
                   .replace('"', "").replace(",", " ").split())
    linked = {p.name.split(".")[0] for p in (output / "pretraining_images").iterdir()}
    assert linked and not any(case in linked for case in held_out)  # never a held-out case's image
    report = (output / "results.md").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert rows[0] == "| seed | from scratch | pretrained | difference |"
    assert [row.split("|")[1].strip() for row in rows[1:4]] == ["0", "1", "mean ± std"]
    assert re.search(r"\| mean ± std \| [\d.]+ ± [\d.]+ \| [\d.]+ ± [\d.]+ \| [-+\d.]+ ± [\d.]+ \|", report)
    assert "126 tensors matched, 0 missing" in capsys.readouterr().out  # the pretrained arm loaded the encoder
    probes = json.loads((output / "probe.json").read_text(encoding="utf-8"))
    assert set(probes) == {"random", "pretrained"}
    assert all(0.0 <= probe["mean_dice"] <= 1.0 and len(probe["class_dice"]) == 3 for probe in probes.values())
    assert "| encoder | liver | kidney | spine | mean Dice |" in report
    assert f"| pretrained | {' | '.join(f'{d:.3f}' for d in probes['pretrained']['class_dice'])} |" in report
    for run in ("scratch_seed0", "pretrained_seed0", "scratch_seed1", "pretrained_seed1"):
        assert (output / run / "validation" / "metrics.json").is_file()
    # Run again: every finished run is reused, nothing trains.
    before = (output / "pretrained_seed1" / "last.pt").stat().st_mtime_ns
    assert main(args) == 0 and (output / "pretrained_seed1" / "last.pt").stat().st_mtime_ns == before


def test_mean_and_spread():
    assert mean_std([0.5, 0.7]) == "0.600 ± 0.141" and mean_std([0.5]) == "0.500" and mean_std([]) == "–"
