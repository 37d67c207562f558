from pathlib import Path

from medseg.commands.demo import DEMO_OVERRIDES
from medseg.config import load_config

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def test_demo_settings_match_their_pipeline_files():
    for strategy, overrides in DEMO_OVERRIDES.items():
        assert load_config(None, overrides) == load_config(PIPELINES / f"demo_{strategy}.yaml")
