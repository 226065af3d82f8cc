"""Run notebooks headlessly (used by the tests and tools), whole, up to a tagged cell or cell by cell,
or run some of their cells in this process."""

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


@dataclass
class TodoWalk:
    """One TODO of a walk through a solution: its self-check run after the exercise's stub, after a
    wrong answer, and after the solution's code."""

    todo: str
    after_stub: Outcome
    after_wrong_answer: Outcome | None
    after_solution: Outcome | None = None


def walk_solution(solution: Path, exercise: Path, wrong_answers: dict, run) -> tuple[list[TodoWalk], list]:
    """Execute the solution cell by cell with `run` (from kernel()), nbgrader's `validate --invert`
    style: before each cell tagged todo-<k>, run the exercise's stub of it and the self-check (the
    code cell tagged check-<k>), then wrong_answers["todo-<k>"] (if any) and the self-check, then the
    solution's cell and, as the notebook goes on, its self-check. Returns a TodoWalk per TODO and the
    Outcome of every cell of the solution in order; stops after the first cell of the solution that
    fails (its Outcome is the last one)."""
    solution_nb, exercise_nb = nbformat.read(solution, as_version=4), nbformat.read(exercise, as_version=4)
    walks, cells = {}, []
    for cell in solution_nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        todo = next((tag for tag in tags if tag.startswith("todo-")), None)
        check = next((tag for tag in tags if tag.startswith("check-")), None)
        if todo:
            check_source = solution_nb.cells[cell_tagged(solution_nb, f"check-{todo[5:]}")].source
            run(exercise_nb.cells[cell_tagged(exercise_nb, todo)].source)
            after_stub = run(check_source)
            after_wrong = None
            if todo in wrong_answers:
                run(wrong_answers[todo])
                after_wrong = run(check_source)
            walks[todo] = TodoWalk(todo, after_stub, after_wrong)
        outcome = run(cell.source)
        cells.append(outcome)
        if check:
            walks[f"todo-{check[6:]}"].after_solution = outcome
        if outcome.error_name:
            break
    return list(walks.values()), cells


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
