"""Every notebook runs top to bottom with tiny budgets, on the shared data where a notebook uses it and
on phantoms where it is absent, and is kept in git without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import SHARED_DATA

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    assert [p.stem[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MEDSEG_NOTEBOOK_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("MEDSEG_SHARED_DATA", str(SHARED_DATA))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
    images = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert images, f"{path.name}: shows no picture"
