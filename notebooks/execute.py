"""Execute the notebooks in place, keeping small outputs (what is committed).

    python notebooks/execute.py                      # every notebook in notebooks/
    python notebooks/execute.py quickstart vision    # those named (stem or path)

Each notebook runs top to bottom as written (its parameters cell sets `SMALL = True`) in a
fresh `python3` kernel whose working directory is a temporary directory, so nothing it
writes lands in the repository. The outputs are then trimmed so that the files stay small
and their diffs readable: no execution timing metadata, ANSI colour codes and progress
bars (tqdm's carriage returns) removed from streams, any stream longer than `MAX_LINES`
lines cut in the middle. Figures stay PNG as the kernel drew them (to shrink one, lower its
size or dpi in the notebook).

A cell that raises stops that notebook with the cell's traceback; its file is left as it
was, the other notebooks still run, and the script exits nonzero. Needs the `notebooks`
extra (`pip install -e ".[notebooks]"`).
"""

import argparse
import pathlib
import re
import sys
import tempfile
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellControlSignal

HERE = pathlib.Path(__file__).resolve().parent
CELL_TIMEOUT_S = 900  # one cell: a cold compile of a training step can take minutes
MAX_LINES = 40  # a longer stream output keeps its first and last MAX_LINES // 2 lines
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
PROGRESS = re.compile(r"\d+%\|")  # tqdm's "42%|####      | 21/50 [...]"


def _clean_stream(text: str) -> str:
    """The text without ANSI codes, each line as a terminal would leave it after carriage
    returns (the last rewrite), and progress-bar lines dropped."""
    lines = []
    for line in ANSI.sub("", text).split("\n"):
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
        if not PROGRESS.search(line):
            lines.append(line)
    return "\n".join(lines)


def _truncate(text: str) -> str:
    lines = text.split("\n")
    if len(lines) <= MAX_LINES:
        return text
    head, tail = lines[: MAX_LINES // 2], lines[-MAX_LINES // 2 :]
    omitted = len(lines) - len(head) - len(tail)
    return "\n".join([*head, f"[... {omitted} lines omitted by notebooks/execute.py ...]", *tail])


def trim(nb) -> None:
    """Small outputs in place: see the module docstring."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            if out.output_type == "stream":
                out.text = _truncate(_clean_stream(out.text))
                if not out.text.strip():
                    continue
            outputs.append(out)
        cell.outputs = outputs


def execute(path: pathlib.Path) -> None:
    """Run one notebook in a fresh kernel and write it back, trimmed. A cell that raises
    or times out, or a kernel that dies, raises (the file is left as it was)."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix=f"nb-{path.stem}-") as workdir:
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            kernel_name="python3",
            record_timing=False,
            coalesce_streams=True,  # one stdout and one stderr output per cell, \r applied
            resources={"metadata": {"path": workdir}},
        )
        client.execute()
    if any(out.output_type == "error" for cell in nb.cells for out in cell.get("outputs", [])):
        raise RuntimeError(f"{path.name}: a cell has an error output")
    trim(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)


def _resolve(name: str) -> pathlib.Path:
    path = pathlib.Path(name)
    if not path.suffix:
        path = HERE / f"{name}.ipynb"
    if not path.is_file():
        raise SystemExit(f"no notebook {name!r} (looked for {path})")
    return path.resolve()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="names or paths (default: all)")
    args = parser.parse_args(argv)
    paths = [_resolve(n) for n in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    failed = []
    for path in paths:
        print(f"{path.name}: executing ...", flush=True)
        start = time.monotonic()
        try:
            execute(path)
        except (CellControlSignal, RuntimeError) as error:  # RuntimeError: DeadKernelError
            print(f"{path.name}: a cell failed, file left unchanged\n{error}", file=sys.stderr)
            failed.append(path.name)
            continue
        seconds = time.monotonic() - start
        print(f"{path.name}: {seconds:.0f} s, {path.stat().st_size / 1e3:.0f} kB", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
