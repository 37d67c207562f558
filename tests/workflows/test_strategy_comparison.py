"""``python -m medseg.benchmark.strategies``: every strategy on the same data and budget, one table with
the budget beside the Dice, and the learning curves."""

import re
import xml.etree.ElementTree as ElementTree

from medseg.benchmark.strategies import main
from tests.helpers import TINY

SMALL = [*TINY, "train.final_validation=true", "train.val_every=1", "lowres.grid_size=[32,32,16]",
         "model.kernel_sizes=null"]


def test_two_strategies_side_by_side(phantom_dir, tmp_path, capsys):
    output = tmp_path / "strategies"
    assert main(["--data", str(phantom_dir), "--minutes", "0.01", "--strategies", "patch,lowres",
                 "--output", str(output), *SMALL]) == 0
    report = (output / "results.md").read_text(encoding="utf-8")
    rows = [re.split(r"\s{2,}", line.strip()) for line in report.split("```")[1].strip().splitlines()]
    assert rows[0][-5:] == ["mean Dice", "steps", "samples", "s/step", "parameters"]
    assert [row[0] for row in rows[1:]] == ["patch", "lowres"]
    assert all(row[-4:-2] == ["2", "2"] for row in rows[1:])  # TINY: 2 steps of one sample
    for name in ("patch", "lowres"):
        assert (output / name / "validation" / "metrics.json").is_file()
    svg = ElementTree.parse(output / "curves_step.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2
    assert "![curves_step](curves_step.svg)" in report and capsys.readouterr().out.count("mean Dice") >= 1
    # --reuse keeps finished runs and scores them again; a run that did not finish is refused.
    kept = (output / "patch" / "last.pt").stat().st_mtime_ns
    assert main(["--data", str(phantom_dir), "--strategies", "patch", "--output", str(output), "--reuse",
                 *SMALL]) == 0
    assert (output / "patch" / "last.pt").stat().st_mtime_ns == kept and "reused" in capsys.readouterr().out
    (output / "lowres" / "validation" / "metrics.json").unlink()
    assert main(["--data", str(phantom_dir), "--output", str(output), "--reuse", *SMALL]) == 1
    assert "did not finish" in capsys.readouterr().err


def test_refuses_unknown_strategies_and_used_folders(phantom_dir, tmp_path, capsys):
    assert main(["--data", str(phantom_dir), "--strategies", "patch,vnet", "--output", str(tmp_path / "a")]) == 1
    assert "unknown 'vnet'" in capsys.readouterr().err and not (tmp_path / "a").exists()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    assert main(["--data", str(phantom_dir), "--output", str(tmp_path / "used")]) == 1
    assert "not empty" in capsys.readouterr().err and (tmp_path / "used" / "keep.txt").read_text() == "mine"
