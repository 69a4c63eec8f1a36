"""Every notebook in notebooks/ runs top to bottom at its smallest scale, and none is
committed with outputs.

Each notebook runs in a fresh kernel (the installed `python3` kernel, i.e. this
interpreter) with `SMALL = True` set right after its cell tagged "parameters". A cell that
raises fails the test with the cell's traceback. The notebooks call
`runtime.configure_jax()`, so their compiled programs come from the persistent cache when
the same computation was compiled before (the tiny training run of quickstart and
analysis is the same config on purpose).
"""

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # one cell: a cold compile of a training step can take minutes here
SMALLEST = "SMALL = True  # injected by tests/test_notebooks.py"


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "randomization.ipynb", "analysis.ipynb", "vision.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs (strip them)"
            assert cell.execution_count is None, f"{path.name}: a code cell has a count"
    source = nb.cells[_parameters_index(nb)].source
    assert "SMALL = False" in source, "the parameters cell sets SMALL, which the test overrides"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(_parameters_index(nb) + 1, nbformat.v4.new_code_cell(SMALLEST))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # ipykernel gives the kernel's stderr a file descriptor (which the training watchdog's
    # faulthandler needs) only when PYTEST_CURRENT_TEST is not in its environment.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    client.execute(env=env)  # raises CellExecutionError with the failing cell's traceback
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors
    images = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if "image/png" in out.get("data", {})
    ]
    assert images, f"{path.name} drew no figure"
