"""``medseg export``: TorchScript and ONNX networks with a sidecar, and ``medseg infer`` from the export
folder predicting what the run predicts. The ONNX export runs under onnxruntime (a dev dependency)."""

import json

import nibabel as nib
import numpy as np
import pytest

from medseg.cli import main
from tests.helpers import write_nifti


def _scan(tmp_path):
    rng = np.random.default_rng(0)
    return write_nifti(tmp_path / "scan.nii.gz", (rng.normal(0, 60, (30, 26, 14)) - 400).astype(np.int16))


def _labels_and_probabilities(out):
    labels = np.asarray(nib.load(out / "scan.nii.gz").dataobj)
    return labels, np.load(out / "scan_probabilities.npz")["probabilities"].astype(np.float32)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_infer_from_an_export_predicts_what_the_run_predicts(tiny_run, tmp_path, fmt, capsys):
    scan = _scan(tmp_path)
    export = tmp_path / f"export_{fmt}"
    assert main(["export", str(tiny_run), "-o", str(export), "--format", fmt]) == 0
    sidecar = json.loads((export / "medseg_export.json").read_text(encoding="utf-8"))
    assert sidecar["format"] == fmt and sidecar["class_names"] == ["background", "liver", "kidney", "spine"]
    assert sidecar["preprocessing"]["orientation"] == "RAS" and sidecar["preprocessing"]["spacing_mm"]
    assert sidecar["inference"]["window"] == sidecar["config"]["patch"]["patch_size"]
    assert sidecar["networks"][0]["input_shape"][0] == "batch"
    assert (export / sidecar["networks"][0]["file"]).is_file()
    for model, out in ((tiny_run, tmp_path / "from_run"), (export, tmp_path / "from_export")):
        assert main(["infer", "--model", str(model), "-i", str(scan), "-o", str(out), "--device", "cpu",
                     "--no-progress", "--save-probabilities"]) == 0
    run_labels, run_probabilities = _labels_and_probabilities(tmp_path / "from_run")
    export_labels, export_probabilities = _labels_and_probabilities(tmp_path / "from_export")
    np.testing.assert_allclose(export_probabilities, run_probabilities, atol=2e-3)
    assert (export_labels == run_labels).mean() > 0.999  # float16 ties aside


def test_export_refuses_a_used_folder_and_unknown_runs(tiny_run, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "mine.txt").write_text("keep")
    assert main(["export", str(tiny_run), "-o", str(used)]) == 2
    assert "not an empty folder" in capsys.readouterr().err and (used / "mine.txt").read_text() == "keep"
    assert main(["export", str(tmp_path / "norun"), "-o", str(tmp_path / "e")]) == 2
    assert "run folder not found" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_a_broken_export_is_a_clear_error(tiny_run, tmp_path, capsys):
    export = tmp_path / "export"
    assert main(["export", str(tiny_run), "-o", str(export)]) == 0
    (export / "network_0.pt").unlink()
    assert main(["infer", "--model", str(export), "-i", str(_scan(tmp_path)), "-o", str(tmp_path / "o")]) == 2
    assert "network file of the export is missing" in capsys.readouterr().err
