"""``medseg infer`` on a folder: a bad case is reported and the rest are predicted, ``--continue`` resumes
an interrupted batch, and ``--num-parts/--part-id`` split a folder across array tasks."""

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from medseg.errors import MedsegError
from medseg.inference.batch import output_is_complete, select_part
from tests.helpers import write_nifti


def _scans(folder, names):
    rng = np.random.default_rng(0)
    for name in names:
        write_nifti(folder / f"{name}.nii.gz", (rng.normal(0, 50, (24, 22, 12)) - 500).astype(np.int16))
    return folder


def _infer(tiny_run, inputs, out, *extra):
    return main(["infer", "--model", str(tiny_run), "-i", str(inputs), "-o", str(out), "--device", "cpu",
                 "--no-progress", *extra])


def test_a_bad_case_is_reported_and_the_batch_goes_on(tiny_run, tmp_path, capsys):
    inputs = _scans(tmp_path / "in", ["a", "c"])
    (inputs / "b.nii.gz").write_bytes(b"not a NIfTI file at all")
    out = tmp_path / "out"
    assert _infer(tiny_run, inputs, out) == 1
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]
    summary = json.loads((out / "infer_summary.json").read_text(encoding="utf-8"))
    assert (summary["written"], summary["skipped"], summary["failed"]) == (2, 0, 1)
    (failed,) = [case for case in summary["cases"] if case["status"] == "failed"]
    assert failed["input"].endswith("b.nii.gz") and failed["error"]
    captured = capsys.readouterr()
    assert "2 written, 0 skipped (already complete), 1 failed" in captured.out
    assert "b.nii.gz" in captured.err and "Traceback" not in captured.err + captured.out


def test_continue_keeps_complete_outputs_and_redoes_the_rest(tiny_run, tmp_path, capsys):
    inputs = _scans(tmp_path / "in", ["a", "b", "c"])
    out = tmp_path / "out"
    assert _infer(tiny_run, inputs, out) == 0
    kept = (out / "a.nii.gz").stat().st_mtime_ns
    (out / "b.nii.gz").write_bytes((out / "b.nii.gz").read_bytes()[:40])  # cut short by a crash
    (out / "c.nii.gz").unlink()  # never written
    assert _infer(tiny_run, inputs, out) == 2  # without --continue the existing outputs are refused
    assert "--continue" in capsys.readouterr().err
    assert _infer(tiny_run, inputs, out, "--continue") == 0
    summary = json.loads((out / "infer_summary.json").read_text(encoding="utf-8"))
    assert [case["status"] for case in summary["cases"]] == ["skipped", "written", "written"]
    assert (out / "a.nii.gz").stat().st_mtime_ns == kept and output_is_complete(out / "b.nii.gz")
    assert _infer(tiny_run, inputs, out, "--continue", "--overwrite") == 2
    assert "choose one" in capsys.readouterr().err


def test_parts_split_a_folder_deterministically(tiny_run, tmp_path):
    inputs = _scans(tmp_path / "in", ["e", "a", "d", "b", "c"])
    out = tmp_path / "out"
    for part in range(2):
        assert _infer(tiny_run, inputs, out, "--num-parts", "2", f"--part-id={part}") == 0
    parts = [json.loads((out / f"infer_summary_part{k}of2.json").read_text(encoding="utf-8")) for k in range(2)]
    names = [[case["input"].rsplit("/", 1)[-1] for case in part["cases"]] for part in parts]
    assert names == [["a.nii.gz", "c.nii.gz", "e.nii.gz"], ["b.nii.gz", "d.nii.gz"]]
    assert len(list(out.glob("*.nii.gz"))) == 5


def test_part_settings_are_checked():
    files = [f"{name}.nii.gz" for name in "abc"]
    from pathlib import Path

    assert select_part([Path(f) for f in files], 1, 0) == [Path(f) for f in files]
    with pytest.raises(MedsegError, match="--part-id: between 0 and 1"):
        select_part([Path(f) for f in files], 2, 2)
    with pytest.raises(MedsegError, match="--num-parts: at least 1"):
        select_part([Path(f) for f in files], 0, 0)


def test_prefetching_the_next_scan_changes_nothing_but_time(tiny_run, tmp_path):
    inputs = _scans(tmp_path / "in", ["a", "b", "c"])
    (inputs / "b2.nii.gz").write_bytes(b"broken")  # read by the prefetching thread: fails alone
    assert _infer(tiny_run, inputs, tmp_path / "ahead") == 1
    assert _infer(tiny_run, inputs, tmp_path / "plain", "--no-prefetch") == 1
    for name in ("a", "b", "c"):
        ahead, plain = (nib.load(tmp_path / run / f"{name}.nii.gz") for run in ("ahead", "plain"))
        np.testing.assert_array_equal(np.asarray(ahead.dataobj), np.asarray(plain.dataobj))
        np.testing.assert_array_equal(ahead.affine, plain.affine)
    for run in ("ahead", "plain"):
        summary = json.loads((tmp_path / run / "infer_summary.json").read_text(encoding="utf-8"))
        assert [case["status"] for case in summary["cases"]] == ["written", "written", "failed", "written"]
        for case in summary["cases"][:2]:  # the time split of every case
            stages = case["stages"]
            assert set(stages) == {"read", "preprocess", "network", "resample", "write", "waited"}
            if run == "plain":  # one stage after the other
                assert sum(v for k, v in stages.items() if k != "waited") <= case["seconds"] + 1e-6
                assert stages["waited"] >= stages["read"] + stages["preprocess"] - 1e-3
