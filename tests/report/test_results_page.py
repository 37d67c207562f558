"""The results page and the README table are written from run files, say their budget, machine and
command, flag methods that learned nothing, and cannot drift from the runs kept in docs/runs."""

import json
from pathlib import Path

import pytest
import yaml

from medseg.errors import MedsegError
from medseg.report.results import (
    README_END,
    README_START,
    main,
    read_manifest,
    render_section,
    replace_readme_table,
    results_page,
)
from medseg.report.run_files import dice_at_step, keep_run, run_figures

REPO = Path(__file__).resolve().parents[2]


def _run_folder(folder: Path, dice: dict[str, float], minutes: float = 10.0, steps_logged: bool = True,
                curve: tuple[float, ...] = (0.2, 0.5, 0.7)) -> Path:
    """A run folder as ``medseg train`` writes it: config, log with validations, held-out scores."""
    (folder / "validation").mkdir(parents=True)
    config = {"data": {"class_names": ["background", *dice], "samples_per_volume": 2},
              "train": {"max_minutes": minutes, "iterations_per_epoch": 50, "batch_size": 4}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    lines = []
    for epoch, value in enumerate(curve):
        elapsed = minutes * (epoch + 1) / len(curve)
        row = {"epoch": epoch, "train_loss": 1.0, "val_mean_dice": value, "elapsed_min": elapsed}
        if steps_logged:
            row.update(step=50 * (epoch + 1), samples_seen=400 * (epoch + 1))
        lines.append(json.dumps(row))
    (folder / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    per_class = {name: {"dice": value, "hd95": 2.0} for name, value in dice.items()}
    metrics = {"mean_dice": sum(dice.values()) / len(dice), "mean_hd95": 2.0, "num_cases": 7, "per_class": per_class}
    (folder / "validation" / "metrics.json").write_text(json.dumps(metrics))
    (folder / "best.pt").write_bytes(b"weights")
    return folder


def _spec(runs: dict[str, str], **extra) -> dict:
    return {"title": "Phantoms, two runs", "kind": "runs", "minutes": 10.0, "budget": "10 minutes on 2 cores",
            "machine": "a test machine", "command": "medseg train --data phantoms", "runs": runs, **extra}


def test_a_runs_section_gives_scores_with_steps_samples_and_seconds_per_step(tmp_path):
    _run_folder(tmp_path / "a", {"liver": 0.9, "kidney": 0.7})
    _run_folder(tmp_path / "b", {"liver": 0.8, "kidney": 0.6}, curve=(0.1, 0.3))
    section = render_section(_spec({"first": "a", "second": "b"}), tmp_path)
    body = section.body
    assert "**Budget:** 10 minutes on 2 cores" in body and "**Machine:** a test machine" in body
    assert "medseg train --data phantoms" in body
    assert "| liver | 0.900 | 0.800 |" in body
    assert "| **mean Dice** | **0.800** | **0.700** |" in body
    assert "| optimiser steps | 150 | 100 |" in body
    assert "| samples seen | 1200 | 800 |" in body
    assert "| s/step | 4.00 | 6.00 |" in body  # 10 minutes over 150 and 100 steps
    # equal steps: the fewest any run made (100), each run's validation there
    assert "| validation Dice during training at <= 100 steps (at step) | 0.500 (100) | 0.300 (100) |" in body
    assert section.headline == ["first: mean Dice 0.800 (150 steps)", "second: mean Dice 0.700 (100 steps)"]


def test_steps_and_samples_of_older_logs_come_from_epochs_batch_and_crops(tmp_path):
    run = run_figures("old", _run_folder(tmp_path / "old", {"liver": 0.9}, steps_logged=False))
    assert run.steps == 3 * 50
    assert run.samples == run.steps * 4 * 2  # batch of 4 images, 2 crops each


def test_a_method_that_learned_nothing_is_reported_as_such_with_its_speed(tmp_path):
    _run_folder(tmp_path / "a", {"liver": 0.01, "kidney": 0.0})
    section = render_section(_spec({"slow net": "a"}), tmp_path)
    assert "**slow net learned nothing at this budget** (mean Dice 0.005): 150 optimiser steps at 4.00 s/step" \
        in section.body
    assert "measures the budget, not the method" in section.body
    assert section.headline == ["slow net: mean Dice 0.005 (150 steps, learned nothing at this budget)"]


def test_a_run_without_a_validation_near_the_equal_step_count_shows_none(tmp_path):
    run = run_figures("sparse", _run_folder(tmp_path / "a", {"liver": 0.9}))
    assert dice_at_step(run, 150) == (150, 0.7)
    assert dice_at_step(run, 130) == (100, 0.5)  # 100 steps is near enough to 130
    assert dice_at_step(run, 140) is None  # its last validation before 140 steps is at 100, too far back
    assert dice_at_step(run, 49) is None


@pytest.mark.parametrize("missing", ["budget", "machine", "command"])
def test_a_section_must_say_its_budget_machine_and_command(tmp_path, missing):
    _run_folder(tmp_path / "a", {"liver": 0.9})
    spec = _spec({"a": "a"})
    del spec[missing]
    with pytest.raises(MedsegError, match=f"no {missing}"):
        render_section(spec, tmp_path)


def test_a_budget_that_disagrees_with_the_runs_config_is_refused(tmp_path):
    _run_folder(tmp_path / "a", {"liver": 0.9}, minutes=30.0)
    with pytest.raises(MedsegError, match="train.max_minutes 30.0, the section says 10.0"):
        render_section(_spec({"a": "a"}), tmp_path)


def test_keep_copies_the_small_files_and_never_the_weights(tmp_path):
    source = _run_folder(tmp_path / "run", {"liver": 0.9})
    kept = tmp_path / "docs" / "runs" / "run"
    keep_run(source, kept)
    assert (kept / "config.yaml").is_file() and (kept / "validation" / "metrics.json").is_file()
    assert not (kept / "best.pt").exists()
    assert run_figures("kept", kept).mean_dice == pytest.approx(0.9)
    with pytest.raises(MedsegError, match="already exists"):
        keep_run(source, kept)


def test_write_replaces_only_the_readme_table_and_refuses_a_readme_without_markers(tmp_path, capsys):
    _run_folder(tmp_path / "docs" / "runs" / "a", {"liver": 0.9})
    manifest = {"title": "Results", "intro": "Figures from runs.", "page": "results.md", "readme": "../README.md",
                "sections": [_spec({"a": "runs/a"}, short_title="Phantoms")]}
    (tmp_path / "docs" / "results.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "README.md").write_text(f"# Title\n\n{README_START}\nold\n{README_END}\n\n## After\n")
    assert main(["write", str(tmp_path / "docs" / "results.yaml")]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert readme.startswith("# Title\n") and readme.endswith("## After\n") and "old" not in readme
    assert "| [Phantoms](docs/results.md#phantoms-two-runs) | a: mean Dice 0.900 (150 steps) |" in readme
    assert "## Phantoms, two runs" in (tmp_path / "docs" / "results.md").read_text()
    (tmp_path / "README.md").write_text("# no markers\n")
    assert main(["write", str(tmp_path / "docs" / "results.yaml")]) == 2
    assert "no results markers" in capsys.readouterr().err


def test_the_results_page_and_readme_table_are_what_the_kept_runs_say():
    """Fails when a figure in docs/results.md or the README was edited by hand or a kept run changed:
    run ``python -m medseg.report.results write docs/results.yaml`` and commit the result."""
    manifest_path = REPO / "docs" / "results.yaml"
    page, short = results_page(read_manifest(manifest_path), manifest_path.parent)
    assert (REPO / "docs" / "results.md").read_text(encoding="utf-8") == page
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert replace_readme_table(readme, short) == readme


def test_every_section_of_the_shipped_page_states_budget_machine_and_command():
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    sections = page.split("\n## ")[1:]
    assert sections
    for section in sections:
        assert "**Budget:**" in section and "**Machine:**" in section and "```\n" in section, section[:80]


def test_a_large_ct_section_gives_seconds_memory_and_the_time_split(tmp_path):
    case = {"name": "medseg infer, 5-fold ensemble -> DICOM SEG", "slices": 800, "seconds": 80.8, "peak_gb": 2.14,
            "stages": {"read": 3.5, "network": 70.0, "write": 2.0}, "end_to_end": 1.08}
    (tmp_path / "ct").mkdir()
    (tmp_path / "ct" / "results.json").write_text(json.dumps(
        {"model": "a patch network", "cases": [case], "prefetch": {"scans": 3, "seconds_without": 45.5,
                                                                  "seconds_with": 39.5, "gain": 1.15}}))
    spec = {"title": "Large CT", "kind": "large_ct", "folder": "ct", "budget": "inference only",
            "machine": "a test machine", "command": "python -m medseg.benchmark.large_ct"}
    section = render_section(spec, tmp_path)
    row = ("| 512x512x800 | medseg infer, 5-fold ensemble -> DICOM SEG | 80.8 | 2.14 | 3.5 | - | 70.0 | - | 2.0 "
           "| 1.08x |")
    assert row in section.body
    assert "45.5 s without and 39.5 s with prefetching (1.15x" in section.body
    assert section.headline == ["800 slices, 5-fold ensemble -> DICOM SEG: 81 s, peak 2.14 GB"]


def test_a_peer_section_flags_a_peer_that_learned_nothing_and_compares_at_equal_steps(tmp_path):
    (tmp_path / "peer" / "medseg_run").mkdir(parents=True)
    (tmp_path / "peer" / "medseg_run" / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"samples_per_volume": 2}, "train": {"batch_size": 4, "iterations_per_epoch": 50}}))
    row = {"budget_min": 10.0, "train_loop_s": 600.0, "batch_size": 5, "predict_s_per_case": 1.0, "cases": 39}
    rows = [{**row, "method": "nnU-Net 2.8.1 3d_fullres", "tta": "mirroring", "epochs": 4, "steps": 100,
             "mean_dice": 0.0, "dice": {"a": 0.0}},
            {**row, "method": "medseg", "tta": "mirroring", "epochs": 26, "steps": 1300, "mean_dice": 0.868,
             "dice": {"a": 0.868}}]
    curves = {"nnunet_pseudo_dice": [{"iterations": 100, "mean_pseudo_dice": 0.0}],
              "medseg_val_dice": [{"epoch": 0, "mean_dice": 0.6}, {"epoch": 1, "mean_dice": 0.77}]}
    (tmp_path / "peer" / "peer_results.json").write_text(json.dumps(
        {"class_names": ["background", "a"], "rows": rows, "curves": curves}))
    spec = {"title": "Peer", "kind": "nnunet_peer", "folders": ["peer"], "budget": "10 minutes",
            "machine": "a test machine", "command": "python -m medseg.benchmark.nnunet_peer"}
    body = render_section(spec, tmp_path).body
    assert "| 10 min | medseg | mirroring | 0.868 | **0.868** | 26 | 1300 | 10400 | 0.46 |" in body  # 8 crops a step
    assert "**nnU-Net 2.8.1 3d_fullres (mirroring), 10 min learned nothing at this budget**" in body
    assert "| 100 (nnU-Net's 10 min) | 0.770 (step 100) | 0.000 |" in body


def test_an_ssl_section_pairs_the_arms_per_seed_with_their_spread_and_the_pretraining(tmp_path):
    protocol = tmp_path / "ssl"
    for seed, (scratch, pretrained) in enumerate([(0.60, 0.66), (0.62, 0.65), (0.58, 0.66)]):
        _run_folder(protocol / f"scratch_seed{seed}", {"a": scratch}, curve=(0.3, scratch))
        _run_folder(protocol / f"pretrained_seed{seed}", {"a": pretrained}, curve=(0.4, pretrained))
    pretraining = protocol / "pretraining"
    pretraining.mkdir()
    (pretraining / "config.yaml").write_text(yaml.safe_dump({"train": {"max_minutes": 30.0}}))
    log = [{"epoch": 0, "step": 20, "samples_seen": 160, "elapsed_min": 0.2, "train_loss": 4.0},
           {"epoch": 1, "step": 40, "samples_seen": 320, "elapsed_min": 0.4, "train_loss": 3.0, "val_loss": 3.5},
           {"epoch": 2, "step": 60, "samples_seen": 480, "elapsed_min": 0.6, "train_loss": 2.0}]
    (pretraining / "train_log.jsonl").write_text("\n".join(json.dumps(row) for row in log) + "\n")
    spec = {"title": "SSL", "kind": "ssl", "minutes": 30.0, "budget": "30 min", "machine": "m", "command": "c",
            "folder": "ssl"}
    section = render_section(spec, tmp_path)
    assert "| 0 | 0.600 | 0.660 | +0.060 | 100 | 800 |" in section.body
    assert "| **mean ± std** | **0.600 ± 0.020** | **0.657 ± 0.006** | **0.057 ± 0.025** |" in section.body
    assert "| 50 | 0.300 ± 0.000 | 0.400 ± 0.000 |" in section.body  # validation Dice by steps, per arm
    assert "Pretraining: 60 steps, 480 sub-volumes, 0.6 minutes (0.60 s/step)" in section.body
    assert "| train loss | 4.000 | 2.000 |" in section.body and "| val loss | 3.500 | 3.500 |" in section.body
    assert section.headline == ["pretrained 0.657 ± 0.006 against scratch 0.600 ± 0.020 (3 seeds, 100 steps)"]
    assert "Linear probes" not in section.body  # no probe.json kept
    (protocol / "probe.json").write_text(json.dumps({"random": {"mean_dice": 0.41, "class_dice": [0.41]},
                                                     "pretrained": {"mean_dice": 0.52, "class_dice": [0.52]}}))
    probed = render_section(spec, tmp_path).body
    assert "| encoder | a | mean Dice |" in probed and "| pretrained | 0.520 | **0.520** |" in probed
    with pytest.raises(MedsegError, match="train.max_minutes 30.0, the section says 20.0"):
        render_section({**spec, "minutes": 20.0}, tmp_path)
