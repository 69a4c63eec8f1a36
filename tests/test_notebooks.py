"""Every notebook in notebooks/ is committed executed at its smallest scale, with small
outputs a reader can see without running it, and still runs top to bottom as committed.

The committed files are checked as they are (no kernel): each code cell executed, in order,
without an error; at least one PNG figure; a bounded file size; no machine paths in the
output text; the parameters cell (tagged "parameters") sets `SMALL = True`.
`notebooks/execute.py` writes those outputs.

Then each notebook runs again, as committed, in a fresh kernel (the installed `python3`
kernel, i.e. this interpreter) with a temporary working directory. A cell that raises
fails the test with the cell's traceback. The notebooks call `runtime.configure_jax()`, so
their compiled programs come from the persistent cache when the same computation was
compiled before (the tiny training run of quickstart and analysis is the same config on
purpose).
"""

import os
import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 900  # one cell: a cold compile of a training step can take minutes here
# The executed notebooks take 0.14 to 0.6 MB (2026-12-03: analysis 0.15, quickstart 0.14,
# randomization 0.49, vision 0.60), nearly all of it PNG figures at matplotlib's inline
# 100 dpi. 1 MB leaves room for figures that compress a little worse, and still fails a
# notebook committed at full scale or with figures at double the dpi (four times the pixels).
MAX_BYTES = 1_000_000
MACHINE_PATHS = ("/work/", "/tmp/", "/home/", "/root/", "/Users/")
TEXT_TYPES = ("text/plain", "text/html", "text/markdown", "text/latex", "application/json")


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def _outputs(nb):
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _images(nb):
    return [out for out in _outputs(nb) if "image/png" in out.get("data", {})]


def _output_text(out) -> str:
    """The text a reader sees of one output (not the base64 of images, where "/tmp/" can
    occur by chance)."""
    if out.output_type == "stream":
        return out.text
    if out.output_type == "error":
        return "\n".join(out.traceback)
    return "\n".join(str(out.data[k]) for k in TEXT_TYPES if k in out.get("data", {}))


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "randomization.ipynb", "analysis.ipynb", "vision.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_small_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    source = nb.cells[_parameters_index(nb)].source
    assert re.search(r"^SMALL = True\b", source, re.MULTILINE), (
        f"{path.name}: the parameters cell must set SMALL = True (the committed scale)"
    )
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts, (
        f"{path.name}: cells not executed (run `python notebooks/execute.py {path.stem}`)"
    )
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{path.name}: cells executed out of order: {counts}"
    )
    for cell in code:
        assert "execution" not in cell.metadata, f"{path.name}: timing metadata left in a cell"
    errors = [out for out in _outputs(nb) if out.output_type == "error"]
    assert not errors, f"{path.name}: committed with an error output"
    assert _images(nb), f"{path.name}: no PNG figure in the outputs"
    size = path.stat().st_size
    assert size <= MAX_BYTES, f"{path.name}: {size / 1e6:.2f} MB > {MAX_BYTES / 1e6:.1f} MB"
    for out in _outputs(nb):
        text = _output_text(out)
        found = [p for p in MACHINE_PATHS if p in text]
        assert not found, f"{path.name}: a machine path {found} in an output: {text[:300]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
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
    assert not [out for out in _outputs(nb) if out.output_type == "error"]
    assert _images(nb), f"{path.name} drew no figure"
