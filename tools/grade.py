"""Grade students' exercise notebooks: which TODOs pass their self-checks, per student.

    make grade SUBMISSIONS="alice.ipynb bob.ipynb"   # or SUBMISSIONS=folder/ (every .ipynb below it)
    make grade SUBMISSIONS=folder/ GRADE_ARGS="--full --cell-timeout 900"

Each submission runs headless, top to bottom, in a fresh kernel, in a copy in a temporary folder,
against a temporary MLflow server of its own, in smoke mode (SMOKE_TEST=1) unless --full, with a
time limit per cell and per submission. After a failing cell it goes on, so that every TODO is
judged. A TODO passes when its self-check (the code cell tagged check-<k>, right after the cell
tagged todo-<k>; `make exercise` writes the tags) runs without error. The self-checks run as the
exercise hands them out, whatever a student changed in them.

Grading runs the students' code with your rights: do it where that is acceptable.

Prints a table and writes grades.csv (submission, todo, passed, seconds, message). Exit status 0
when grading ran, whatever the scores; 2 when there is nothing to grade; 1 when the grader could
not run (e.g. no MLflow server).
"""

import argparse
import contextlib
import copy
import csv
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from tools import REPO, mlflow_server, processes

REFERENCE = REPO / "ray_tune.ipynb"  # the exercise as handed out: its TODOs and self-checks
TODO_TAG = re.compile(r"todo-(\d+)")


@dataclass
class Grade:
    """One TODO of one submission: a row of grades.csv."""

    submission: str
    todo: str
    passed: bool
    seconds: float
    message: str


@dataclass
class Outcome:
    """What happened when one code cell ran (or why it did not)."""

    seconds: float = 0.0
    error: str = ""  # the first line of the error; "" when the cell ran cleanly


class UsageError(Exception):
    """Nothing to grade, or a bad argument: printed without a traceback."""


# --- the notebooks' structure -------------------------------------------------------------------


def todo_numbers(notebook: nbformat.NotebookNode) -> list[int]:
    """The TODOs a notebook declares, in order: k of each cell tagged todo-<k>."""
    tags = [tag for cell in notebook.cells for tag in cell.metadata.get("tags", [])]
    return [int(match[1]) for tag in tags if (match := TODO_TAG.fullmatch(tag))]


def cells_tagged(notebook: nbformat.NotebookNode, tag: str) -> list[int]:
    return [i for i, cell in enumerate(notebook.cells) if tag in cell.metadata.get("tags", [])]


def next_code_cell(notebook: nbformat.NotebookNode, index: int) -> int | None:
    later = range(index + 1, len(notebook.cells))
    return next((i for i in later if notebook.cells[i].cell_type == "code"), None)


def structure_problems(submission: nbformat.NotebookNode, todos: list[int]) -> dict[int, str]:
    """Per TODO, what is wrong with the submission's cells for it (deleted, doubled, reordered)."""
    problems = {}
    for k in todos:
        todo, check = cells_tagged(submission, f"todo-{k}"), cells_tagged(submission, f"check-{k}")
        if not todo:
            problems[k] = f"the TODO cell (tag todo-{k}) was deleted"
        elif not check:
            problems[k] = f"the self-check cell (tag check-{k}) was deleted"
        elif len(todo) > 1 or len(check) > 1:
            problems[k] = f"the cells tagged todo-{k} / check-{k} appear more than once"
        elif next_code_cell(submission, todo[0]) != check[0]:
            problems[k] = f"cells were moved: check-{k} is not the code cell right after todo-{k}"
    return problems


def with_reference_checks(submission, reference) -> nbformat.NotebookNode:
    """A copy of the submission whose self-check cells hold the exercise's own code."""
    graded = copy.deepcopy(submission)
    for k in todo_numbers(reference):
        [original] = cells_tagged(reference, f"check-{k}")
        for index in cells_tagged(graded, f"check-{k}"):
            graded.cells[index].source = reference.cells[original].source
    for cell in graded.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return graded


# --- running a notebook cell by cell, going on after errors --------------------------------------


def first_error_line(cell: nbformat.NotebookNode) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            lines = f"{output.ename}: {output.evalue}".strip().splitlines()
            return lines[0] if lines else output.ename
    return ""


def run_cells(notebook, workdir: Path, env: dict, cell_timeout: float, time_limit: float) -> dict:
    """Run every code cell in a fresh kernel started in workdir with env; a failing cell does not
    stop the run. A cell is interrupted after cell_timeout seconds; at time_limit seconds the kernel
    is killed and the remaining cells do not run. Returns each code cell's outcome by index."""
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=cell_timeout, interrupt_on_timeout=True,
        allow_errors=True, resources={"metadata": {"path": str(workdir)}},
    )  # fmt: skip
    outcomes, stopped = {}, ""
    over_time = threading.Event()
    with client.setup_kernel(env=env):
        watchdog = threading.Timer(time_limit, kill_kernel, args=(client, over_time))
        watchdog.start()
        try:
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code":
                    continue
                if stopped:
                    outcomes[index] = Outcome(error=stopped)
                    continue
                start = time.monotonic()
                try:
                    client.execute_cell(cell, index)
                    error = first_error_line(cell)
                    if error.startswith("KeyboardInterrupt") and time.monotonic() - start >= cell_timeout:
                        error = f"the cell ran longer than its time limit ({cell_timeout:.0f} s)"
                except DeadKernelError:
                    limit = f"the submission's time limit ({time_limit:.0f} s) was reached"
                    error = stopped = limit if over_time.is_set() else "the kernel died"
                outcomes[index] = Outcome(time.monotonic() - start, error)
        finally:
            watchdog.cancel()
    return outcomes


def kill_kernel(client: NotebookClient, over_time: threading.Event) -> None:
    over_time.set()
    provisioner = client.km.provisioner if client.km else None
    if provisioner is not None and provisioner.pgid:
        os.killpg(provisioner.pgid, signal.SIGKILL)


@contextlib.contextmanager
def tracking_server(data_dir: Path, uri: str | None):
    """The given server's URI, or that of a temporary server for one submission alone."""
    if uri:
        yield uri
        return
    with mlflow_server.temporary_server(data_dir) as server:
        yield server.url


# --- grading ------------------------------------------------------------------------------------


def grade(name: str, path: Path, reference, settings: dict, tracking_uri: str | None) -> list[Grade]:
    """Grade one submission: one Grade per TODO of the reference."""
    todos = todo_numbers(reference)
    try:
        submission = nbformat.read(path, as_version=4)
        nbformat.validate(submission)
    except Exception as error:  # not JSON, not a notebook, unreadable: all the same to the student
        reason = f"not a notebook ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
        return [Grade(name, f"todo-{k}", False, 0.0, reason) for k in todos]
    problems = structure_problems(submission, todos)
    graded = with_reference_checks(submission, reference)
    with tempfile.TemporaryDirectory(prefix="grade-") as folder:
        workdir = Path(folder) / "submission"
        workdir.mkdir()
        nbformat.write(graded, workdir / path.name)
        env = dict(os.environ, PYTHONPATH=str(REPO), SMOKE_TEST="0" if settings["full"] else "1")
        env.pop("RAY_ADDRESS", None)  # grade on this machine
        keep = processes.descendants()
        try:
            with tracking_server(Path(folder) / "mlflow", tracking_uri) as uri:
                env["MLFLOW_TRACKING_URI"] = uri
                outcomes = run_cells(graded, workdir, env, settings["cell_timeout"], settings["time_limit"])
        finally:
            processes.stop_descendants(keep)  # Ray's daemons and whatever else the student started
    grades = []
    for k in todos:
        if k in problems:
            grades.append(Grade(name, f"todo-{k}", False, 0.0, problems[k]))
            continue
        [todo], [check] = cells_tagged(graded, f"todo-{k}"), cells_tagged(graded, f"check-{k}")
        todo_outcome, check_outcome = outcomes[todo], outcomes[check]
        if not check_outcome.error:
            message = ""
        elif todo_outcome.error:
            message = f"TODO cell: {todo_outcome.error}"
        else:
            message = f"self-check: {check_outcome.error}"
        seconds = round(todo_outcome.seconds + check_outcome.seconds, 1)
        grades.append(Grade(name, f"todo-{k}", not check_outcome.error, seconds, message))
    return grades


def submissions(paths: list[str]) -> list[Path]:
    """The notebooks to grade: files as given, folders searched for *.ipynb (checkpoints left out)."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            notebooks = sorted(p for p in given.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            if not notebooks:
                raise UsageError(f"{given}/ holds no notebooks (*.ipynb)")
            found += notebooks
        elif given.exists():
            found.append(given)
        else:
            raise UsageError(f"{given}: no such file or folder")
    if not found:
        raise UsageError('nothing to grade: make grade SUBMISSIONS="a.ipynb b.ipynb" (or a folder)')
    return found


def print_table(rows: list[tuple[str, list[Grade], float]]) -> None:
    width = max(len("submission"), *(len(name) for name, _, _ in rows))
    print(f"\n{'submission':{width}}  passed  seconds")
    for name, grades, seconds in rows:
        passed = f"{sum(g.passed for g in grades)}/{len(grades)}"
        print(f"{name:{width}}  {passed:>6}  {seconds:7.0f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="SUBMISSION", help="notebooks, or folders of them")
    parser.add_argument("--full", action="store_true", help="run in full mode, not smoke mode")
    parser.add_argument("--cell-timeout", type=float, default=600, help="seconds a cell may run")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds a submission may run")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV file to write")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the exercise as handed out")
    parser.add_argument("--tracking-uri", help="grade against this MLflow server, not a temporary one each")
    args = parser.parse_args(argv)
    settings = {"full": args.full, "cell_timeout": args.cell_timeout, "time_limit": args.time_limit}
    try:
        paths = submissions(args.paths)
        reference = nbformat.read(args.reference, as_version=4)
        if not todo_numbers(reference):
            raise UsageError(f"{args.reference} has no cells tagged todo-<k>: regenerate it (make exercise)")
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    processes.become_subreaper()  # so that what a kernel leaves behind can be stopped
    rows = []
    try:
        for path in paths:
            print(f"grading {path} ...", flush=True)
            start = time.monotonic()
            grades = grade(str(path), path, reference, settings, args.tracking_uri)
            rows.append((str(path), grades, time.monotonic() - start))
    except mlflow_server.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    with open(args.out, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([field.name for field in fields(Grade)])
        writer.writerows(astuple(g) for _, grades, _ in rows for g in grades)
    print_table(rows)
    print(f"\nper TODO, with the first line of each error: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
