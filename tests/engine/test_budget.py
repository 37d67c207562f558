"""Budget figures and learning curves read back from a run folder, and the SVG chart they are drawn in."""

import json
import math
import xml.etree.ElementTree as ElementTree

import pytest

from medseg.engine.budget import learning_curve, run_budget
from medseg.engine.plots import curves_svg, nice_ticks
from medseg.errors import MedsegError

SVG = "{http://www.w3.org/2000/svg}"


def test_budget_figures_from_a_checkpoint():
    budget = run_budget({"global_step": 40, "samples_seen": 160, "elapsed_s": 20.0}, parameters=1234)
    assert budget.figures() == {"steps": 40, "samples_seen": 160, "s_per_step": 0.5, "train_seconds": 20.0,
                                "parameters": 1234}
    assert math.isnan(run_budget({"global_step": 0, "elapsed_s": 0.0}, 1).seconds_per_step)


def test_learning_curve_takes_the_validated_epochs_only(tmp_path):
    lines = [{"epoch": 0, "step": 10, "elapsed_min": 0.5, "train_loss": 1.0, "val_mean_dice": 0.2},
             {"epoch": 1, "step": 20, "elapsed_min": 1.0, "train_loss": 0.8},
             {"epoch": 2, "step": 30, "elapsed_min": 1.5, "train_loss": 0.6, "val_mean_dice": 0.5}]
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert learning_curve(tmp_path) == [(10, 0.2), (30, 0.5)]
    assert learning_curve(tmp_path, x="elapsed_min") == [(0.5, 0.2), (1.5, 0.5)]
    (tmp_path / "train_log.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(MedsegError, match="line 1 is not JSON"):
        learning_curve(tmp_path)
    with pytest.raises(MedsegError, match="no training log"):
        learning_curve(tmp_path / "missing")


@pytest.mark.parametrize("low, high, expected", [(0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
                                                 (0, 730, [0, 200, 400, 600, 800]),
                                                 (0.3, 0.9, [0.2, 0.4, 0.6, 0.8, 1.0])])
def test_ticks_are_round_and_cover_the_range(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_chart_has_one_line_and_legend_entry_per_curve_inside_the_plot():
    svg = ElementTree.fromstring(curves_svg({"fcn": [(100, 0.1), (200, 0.4)], "unet <2d>": [(50, 0.3)], "none": []},
                                            "optimiser steps", "Dice", "title"))
    lines = svg.findall(f"{SVG}polyline")
    assert len(lines) == 2  # the empty curve is left out
    texts = [t.text for t in svg.findall(f"{SVG}text")]
    assert {"fcn", "unet <2d>", "optimiser steps", "Dice", "title"} <= set(texts)
    frame = svg.find(f"{SVG}rect[@stroke]")
    assert frame is not None
    left, top = float(frame.get("x")), float(frame.get("y"))
    right, bottom = left + float(frame.get("width")), top + float(frame.get("height"))
    for line in lines:
        for point in line.get("points").split():
            x, y = map(float, point.split(","))
            assert left <= x <= right and top <= y <= bottom
