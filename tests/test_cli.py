"""The CLI as a user runs it: exit codes, one-line errors naming the file, nothing written on failure."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from medseg.cli import main
from tests.helpers import TINY, write_nifti


def _dataset(root, n=3, shape=(16, 16, 16)):
    for i in range(n):
        image = np.random.default_rng(i).normal(0, 1, shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[4:10, 4:10, 4:10] = 1
        write_nifti(root / "imagesTr" / f"c{i}_0000.nii.gz", image)
        write_nifti(root / "labelsTr" / f"c{i}.nii.gz", label)
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "blob": 1}, "file_ending": ".nii.gz"}))
    return root


def _break(root, kind):
    image, label = root / "imagesTr" / "c1_0000.nii.gz", root / "labelsTr" / "c1.nii.gz"
    if kind == "truncated":
        image.write_bytes(image.read_bytes()[:300])
        return image
    if kind == "not-an-image":
        image.write_bytes(gzip.compress(b"patient notes, not an image"))
        return image
    if kind == "2d":
        write_nifti(image, np.zeros((16, 16), np.float32))
        return image
    if kind == "4d":
        write_nifti(image, np.zeros((16, 16, 16, 2), np.float32))
        return image
    if kind == "shape-mismatch":
        write_nifti(label, np.zeros((16, 16, 12), np.uint8))
        return label
    if kind == "affine-mismatch":
        write_nifti(label, np.zeros((16, 16, 16), np.uint8), np.diag([2.0, 1.0, 1.0, 1.0]))
        return label
    if kind == "label-out-of-range":
        write_nifti(label, np.full((16, 16, 16), 5, np.uint8))
        return label
    raise ValueError(kind)


def _config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\n")
    return str(path)


BROKEN = ["truncated", "not-an-image", "2d", "4d", "shape-mismatch", "affine-mismatch", "label-out-of-range"]


def _one_line_error(capsys, name):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert name in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", BROKEN)
def test_check_reports_each_problem_on_its_own_line(tmp_path, capsys, kind):
    bad = _break(_dataset(tmp_path / "ds"), kind)
    assert main(["check", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out.splitlines()
    problems = [line for line in out if line.startswith(str(bad))]
    assert len(problems) == 1, out
    assert "1 problem(s)" in out[-1]


def test_check_passes_a_clean_dataset(tmp_path, capsys):
    assert main(["check", str(_dataset(tmp_path / "ds"))]) == 0
    assert "3 cases" in capsys.readouterr().out


@pytest.mark.parametrize("kind", BROKEN)
def test_train_fails_early_with_one_line_and_writes_nothing(tmp_path, capsys, kind):
    bad = _break(_dataset(tmp_path / "ds"), kind)
    out = tmp_path / "run"
    assert main(["train", _config(tmp_path), "--data", str(tmp_path / "ds"), "--output", str(out), *TINY]) == 2
    _one_line_error(capsys, bad.name)
    assert not out.exists()


def test_train_rejects_unknown_key_and_empty_folder(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  max_epoch: 3\n")
    assert main(["train", str(config), "--data", str(_dataset(tmp_path / "ds"))]) == 2
    err = _one_line_error(capsys, "c.yaml")
    assert "max_epochs" in err
    (tmp_path / "empty").mkdir()
    assert main(["train", _config(tmp_path), "--data", str(tmp_path / "empty"), "--output", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "empty")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind", ["truncated", "not-an-image", "2d", "4d"])
def test_infer_bad_input_fails_cleanly(tiny_run, tmp_path, capsys, kind):
    bad = _break(_dataset(tmp_path / "ds"), kind)
    out = tmp_path / "pred"
    assert main(["infer", "--model", str(tiny_run), "-i", str(bad), "-o", str(out), "--no-progress"]) == 2
    _one_line_error(capsys, bad.name)
    assert not out.exists() or not list(out.glob("*.nii.gz"))


def test_infer_empty_folder_and_missing_run(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["infer", "--model", str(tiny_run), "-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "empty")
    assert main(["infer", "--model", str(tmp_path / "norun"), "-i", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "norun")


def test_train_infer_evaluate_round_trip(phantom_dir, tiny_run, tmp_path, capsys):
    pred = tmp_path / "pred"
    images = tmp_path / "images"
    shutil.copytree(phantom_dir / "imagesTr", images)
    assert main(["infer", "--model", str(tiny_run), "-i", str(images), "-o", str(pred), "--no-progress"]) == 0
    assert sorted(p.name for p in pred.glob("*.nii.gz")) == sorted(p.name for p in (phantom_dir / "labelsTr").iterdir())
    assert (pred / "infer_summary.json").is_file()  # a folder of cases is a batch with a summary
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--pred", str(pred), "--gt", str(phantom_dir / "labelsTr"),
                 "--dataset", str(phantom_dir), "-o", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "liver" in out and "kidney" in out and "spine" in out
    summary = json.loads(metrics.read_text(encoding="utf-8"))
    assert 0.0 <= summary["mean_dice"] <= 1.0
    assert set(summary["per_class"]) == {"liver", "kidney", "spine"}
    assert metrics.with_suffix(".csv").is_file()


def test_console_script_prints_no_traceback(tmp_path):
    medseg = shutil.which("medseg", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert medseg, "the medseg console script is not installed next to this Python"
    result = subprocess.run([medseg, "check", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 1
    assert "missing: dataset folder not found" in result.stdout and "Traceback" not in result.stderr
    result = subprocess.run([medseg, "infer", "--model", str(tmp_path), "-i", "x", "-o", "y"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
