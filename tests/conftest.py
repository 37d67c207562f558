"""Shared fixtures: tiny synthetic datasets and a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.data.phantom import generate_phantom_dataset
from tests.helpers import TINY


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """Six small synthetic CT cases in the nnU-Net v2 layout."""
    return generate_phantom_dataset(tmp_path_factory.mktemp("phantom"), num_cases=6, seed=0, shape=(40, 36, 24))


@pytest.fixture(scope="session")
def tiny_run(phantom_dir, tmp_path_factory) -> Path:
    """A run folder trained for one tiny epoch on the phantoms (for inference tests)."""
    from medseg.workflows.training import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(None, data_dir=phantom_dir, output=run_dir, overrides=TINY, log=lambda _: None)
    return run_dir
