"""The training rows of ``python -m medseg.benchmark``: one per speed setting, the plan's choice marked."""

import pytest

from medseg.benchmark.__main__ import training_throughput
from medseg.hardware import cpu_has_native_bf16


@pytest.mark.parametrize("strategy", ["patch", "lowres"])
def test_each_speed_setting_gets_a_row_and_the_planned_one_is_marked(phantom_dir, strategy):
    rows = training_throughput("phantoms", None, phantom_dir, 1.0, strategy, iterations=1)
    variants = [r["variant"] for r in rows]
    assert variants[:2] == ["before (fp32, contiguous)", "channels-last, fp32"]
    assert len(variants) == (3 if cpu_has_native_bf16() else 2)
    assert [r["variant"] for r in rows if r["planned"]] == [variants[-1]]  # bf16 where native, else fp32
    assert all(r["samples_per_s"] > 0 and r["s_per_step"] > 0 for r in rows)
