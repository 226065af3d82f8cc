"""What grading costs: seconds per complete submission, and the wall time of a probe set of six
submissions graded with --jobs 1 and --jobs 2, through `make grade`'s own code (tools/grade.py).

    make bench-grade                                   # the lab's exercise, 3 repeats
    python -m benchmarks.grading --repeats 5 --skip-probe-set

A complete submission is the exercise with the solution's code in every TODO cell (the SOLUTION
markers left out). The probe set: that complete submission, the same with scratch cells and a moved
markdown cell, one with the first TODO left undone, one with the last left undone, one with the first
half done, and the exercise untouched. Grading runs in smoke mode, each submission sandboxed with its
own MLflow server, as `make grade` does.
"""

import argparse
import csv
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from tools import grade, make_exercise

MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION.*\n?", flags=re.MULTILINE)


def todo_tag(cell) -> str | None:
    return next((tag for tag in cell.metadata.get("tags", []) if tag.startswith("todo-")), None)


def filled(exercise: nbformat.NotebookNode, solution: nbformat.NotebookNode, todos) -> nbformat.NotebookNode:
    """The exercise with the solution's code in the TODO cells named in todos."""
    answers = {todo_tag(cell): MARKER.sub("", cell.source) for cell in solution.cells if todo_tag(cell)}
    made = nbformat.from_dict(exercise)
    for cell in made.cells:
        if todo_tag(cell) in todos:
            cell.source = answers[todo_tag(cell)]
    return made


def with_scratch(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    made = nbformat.from_dict(notebook)
    for index in reversed([i for i, cell in enumerate(made.cells) if todo_tag(cell)]):
        made.cells.insert(index + 1, nbformat.v4.new_code_cell("print('trying my answer')"))
    made.cells.append(made.cells.pop(0))  # the title moved to the end
    return made


def probe_set(exercise_path: Path, solution_path: Path) -> dict[str, nbformat.NotebookNode]:
    exercise, solution = (nbformat.read(p, as_version=4) for p in (exercise_path, solution_path))
    todos = [todo_tag(cell) for cell in exercise.cells if todo_tag(cell)]
    complete = filled(exercise, solution, todos)
    return {
        "complete": complete,
        "complete_with_scratch": with_scratch(complete),
        "first_todo_undone": filled(exercise, solution, todos[1:]),
        "last_todo_undone": filled(exercise, solution, todos[:-1]),
        "first_half_done": filled(exercise, solution, todos[: len(todos) // 2]),
        "untouched": exercise,
    }


def timed_grading(folder: Path, notebooks: dict, jobs: int, reference: Path) -> tuple[float, list[float]]:
    """Seconds to grade the notebooks in a fresh folder with --jobs jobs, and the CPU-seconds each
    submission used (from grades_summary.csv; none where the machine has no cgroups to count them)."""
    folder.mkdir(parents=True)
    for name, notebook in notebooks.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    start = time.monotonic()
    out = folder.parent / f"{folder.name}-grades"
    status = grade.main([str(folder), "--out", str(out), "--jobs", str(jobs), "--reference", str(reference)])
    seconds = time.monotonic() - start
    if status != 0:
        raise SystemExit(f"grading {folder} failed (exit status {status})")
    with open(out / "grades_summary.csv", newline="") as summary:
        cpu = [float(row["cpu_seconds"]) for row in csv.DictReader(summary) if row["cpu_seconds"]]
    return seconds, cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="complete submissions graded one by one")
    parser.add_argument("--skip-probe-set", action="store_true", help="only the complete submission")
    parser.add_argument("--reference", type=Path, default=grade.REFERENCE, help="the exercise")
    parser.add_argument("--solution", type=Path, default=make_exercise.SOLUTION, help="its solution")
    args = parser.parse_args(argv)
    probes = probe_set(args.reference, args.solution)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as work:
        work = Path(work)
        runs = [
            timed_grading(work / f"complete{i}", {"complete": probes["complete"]}, 1, args.reference)
            for i in range(args.repeats)
        ]
        seconds, cpu = [wall for wall, _ in runs], [used for _, each in runs for used in each]
        print(f"complete submission: {statistics.median(seconds):.0f} s (median of {args.repeats}; "
              f"each: {', '.join(f'{s:.0f}' for s in seconds)})", flush=True)  # fmt: skip
        if cpu:
            print(f"  CPU-seconds of its processes: {statistics.median(cpu):.0f} (median)", flush=True)
        if not args.skip_probe_set:
            for jobs in (1, 2):
                seconds, _ = timed_grading(work / f"probes{jobs}", probes, jobs, args.reference)
                print(f"probe set of {len(probes)}, --jobs {jobs}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
