from pathlib import Path

from medseg.commands.demo import DEMO_OVERRIDES
from medseg.config import load_config

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_demo_settings_match_their_pipeline_files():
    for strategy, overrides in DEMO_OVERRIDES.items():
        assert load_config(None, overrides) == load_config(PIPELINES / f"demo_{strategy}.yaml")


def test_several_strategies_end_with_a_budget_honest_table_and_learning_curves(tmp_path, monkeypatch, capsys):
    """Tiny settings over the demo's own: the comparison prints steps, samples, s/step and parameters
    beside each strategy's Dice and draws the validation curves of every strategy."""
    import functools
    import re
    import xml.etree.ElementTree as ElementTree

    from medseg.commands import demo
    from medseg.data.phantom import generate_phantom_dataset
    from tests.helpers import TINY

    monkeypatch.setattr(demo, "generate_phantom_dataset",
                        functools.partial(generate_phantom_dataset, shape=(40, 36, 24)))
    monkeypatch.setattr(demo, "TRAIN_CASES", 4)
    monkeypatch.setattr(demo, "TEST_CASES", 1)
    tiny = [*TINY, "lowres.grid_size=[32,32,16]", "model.kernel_sizes=null", "train.val_every=1"]
    monkeypatch.setattr(demo, "DEMO_OVERRIDES", {name: [*DEMO_OVERRIDES[name], *tiny] for name in ("patch", "lowres")})
    runs = demo.run_demo(tmp_path, strategy="all", minutes=0.01, log=print)
    out = capsys.readouterr().out
    table = [re.split(r"\s{2,}", line.strip()) for line in
             out[out.index("comparison on the held-out test cases"):].splitlines()[1:4]]
    assert table[0][-6:] == ["mean Dice", "steps", "samples", "s/step", "parameters", "infer s/case"]
    assert table[1][0] == "patch" and table[1][-5:-3] == ["2", "2"]  # 2 steps of 1 crop (TINY)
    assert table[2][0] == "lowres" and table[2][-2].endswith(" M")
    (curves,) = tmp_path.glob("comparison-*")
    svg = ElementTree.parse(curves / "curves_step.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == len(runs) == 2
