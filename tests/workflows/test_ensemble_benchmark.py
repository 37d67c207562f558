"""``python -m medseg.benchmark.ensemble``: folds trained on all but a held-out set, every fold and the
ensemble scored on that set, one table."""

import json

from medseg.benchmark.ensemble import main
from tests.helpers import TINY


def test_folds_and_their_ensemble_on_cases_no_fold_saw(phantom_dir, tmp_path, capsys):
    output = tmp_path / "ensemble"
    args = ["--data", str(phantom_dir), "--output", str(output), "--folds", "2", "--minutes", "1", "--hold-out",
            "0.25", *TINY]
    assert main(args) == 0
    held_out = {p.name for p in (output / "held_out" / "labels").iterdir()}
    trained = {p.name for p in (output / "training_data" / "labelsTr").iterdir()}
    assert held_out and trained and not held_out & trained
    listed = json.loads((output / "training_data" / "dataset.json").read_text())["training"]
    assert len(listed) == len(trained)
    for fold in ("fold_0", "fold_1"):
        split = json.loads((output / "folds" / fold / "split.json").read_text())
        assert not {f"{case}.nii.gz" for part in split.values() for case in part} & held_out
    report = (output / "results.md").read_text(encoding="utf-8")
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")]
    assert rows == ["model", "fold_0", "fold_1", "ensemble of 2"]
    assert "Single folds: mean Dice" in report and "± " in report
    scored = json.loads((output / "scores" / "ensemble" / "metrics.json").read_text())
    assert scored["num_cases"] == len(held_out)
    # Run again: the folds are reused, nothing trains.
    before = (output / "folds" / "fold_1" / "last.pt").stat().st_mtime_ns
    assert main(args) == 0 and (output / "folds" / "fold_1" / "last.pt").stat().st_mtime_ns == before
    assert "ensemble of 2" in capsys.readouterr().out
