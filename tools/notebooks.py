"""Run notebooks headlessly (used by the tests and tools), whole, up to a tagged cell or cell by cell,
or run some of their cells in this process. (The tests' walk through a solution is tests/walk.py.)"""

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tools import REPO


def cell_tagged(notebook: nbformat.NotebookNode, tag: str) -> int:
    """The index of the one cell that carries `tag`."""
    found = [i for i, cell in enumerate(notebook.cells) if tag in cell.metadata.get("tags", [])]
    if len(found) != 1:
        raise LookupError(f"expected one cell tagged {tag!r}, found {len(found)}")
    return found[0]


def execute_notebook(path: Path, timeout: int = 900, until_tag: str | None = None) -> nbformat.NotebookNode:
    """Execute the notebook at path from the repo root, or only up to and including the cell tagged
    `until_tag`; raises CellExecutionError on failure. The kernel inherits this process's environment
    (MLFLOW_TRACKING_URI, SMOKE_TEST, RAY_ADDRESS). Returns the notebook with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    if until_tag is not None:
        notebook.cells = notebook.cells[: cell_tagged(notebook, until_tag) + 1]
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed (their stream outputs)."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


@dataclass
class Outcome:
    """What one piece of code did in the kernel."""

    source: str
    seconds: float
    error_name: str = ""  # "" when it ran cleanly
    error_value: str = ""
    outputs: list = field(default_factory=list)

    @property
    def error(self) -> str:
        return f"{self.error_name}: {self.error_value}" if self.error_name else ""


@contextlib.contextmanager
def kernel(cwd: Path = REPO, timeout: float = 600, env: dict | None = None):
    """A fresh kernel started in cwd (with env, else this process's environment). Yields run(source),
    which executes source in it and returns its Outcome; an error in the code does not stop the kernel."""
    notebook = nbformat.v4.new_notebook()
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=timeout,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )

    def run(source: str) -> Outcome:
        cell = nbformat.v4.new_code_cell(source)
        notebook.cells.append(cell)
        start = time.monotonic()
        client.execute_cell(cell, len(notebook.cells) - 1)
        outcome = Outcome(source, time.monotonic() - start, outputs=cell.outputs)
        for output in cell.outputs:
            if output.output_type == "error":
                outcome.error_name, outcome.error_value = output.ename, output.evalue
        return outcome

    with client.setup_kernel(**({"env": env} if env is not None else {})):
        yield run


def load_cells(path: Path, tag: str) -> dict:
    """Execute, in this process and in order, the code cells of the notebook at path that carry `tag`,
    and return the namespace they leave: a script that measures what a notebook teaches runs the
    notebook's own code instead of a copy."""
    namespace = {"__name__": Path(path).stem}  # not importable: Ray ships its functions by value
    notebook = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if tag in cell.metadata.get("tags", [])]
    if not tagged:
        raise LookupError(f"{path} has no cell tagged {tag!r}")
    for index in tagged:
        exec(compile(notebook.cells[index].source, f"{path}, cell {index}", "exec"), namespace)
    return namespace
