"""What grading costs, through `make grade`'s own code (tools/grade.py): seconds per complete
submission with --jobs 1 and --jobs 2 (median of 3), the CPU-seconds a submission costs (every process
it starts, the grader's share included), and from those what a machine with more cores would do.

    make bench-grade                                      # the lab's exercise: --jobs 1 and 2, 3 repeats
    python -m benchmarks.grading --cpus 1 --jobs 1 2      # the grader pinned to one core
    python -m benchmarks.grading --probe-set              # and six varied submissions with --jobs 1 and 2

A complete submission is the exercise with the solution's code in every TODO cell (the SOLUTION
markers left out); a run grades a class of --class-size copies of it in a fresh output folder, and
seconds per submission is that run's wall time over the class size. The --jobs values take turns,
repeat by repeat, so that a change in the machine's load falls on each alike. CPU-seconds are this
process's and its reaped descendants' (kernels, Ray, MLflow servers: the grader reaps them all), per
submission. The estimate for more cores is a model, not a measurement: a submission alone takes W
seconds and C CPU-seconds, so c cores with --jobs c grade one at best every max(W, C) / c seconds;
these cores reached a fraction e of their best, and c cores (with 6 GiB of memory per job) are
assumed to reach as much. --cpus pins the grader and all it starts to fewer cores
(sched_setaffinity; Ray still sees the machine's count), to check the model on a smaller machine.
The probe set: the complete submission, the same with scratch cells and a moved
markdown cell, one with the first TODO left undone, one with the last left undone, one with the first
half done, and the exercise untouched. Grading runs in smoke mode, as `make grade` does.
"""

import argparse
import contextlib
import io
import os
import re
import resource
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


def cpu_seconds() -> float:
    """CPU time of this process and of its descendants reaped so far."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def timed_grading(folder: Path, notebooks: dict, jobs: int, reference: Path) -> tuple[float, float]:
    """Seconds and CPU-seconds to grade the notebooks in a fresh folder with --jobs jobs."""
    folder.mkdir(parents=True)
    for name, notebook in notebooks.items():
        nbformat.write(notebook, folder / f"{name}.ipynb")
    out = folder.parent / f"{folder.name}-grades"
    cpu, start = cpu_seconds(), time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        status = grade.main(
            [str(folder), "--out", str(out), "--jobs", str(jobs), "--reference", str(reference)]
        )
    seconds, cpu = time.monotonic() - start, cpu_seconds() - cpu
    if status != 0:
        raise SystemExit(f"grading {folder} failed (exit status {status})")
    return seconds, cpu


def time_jobs(work: Path, complete, args) -> tuple[dict[int, float], list[float]]:
    """Seconds per complete submission for each --jobs value (the median of the repeats, run in turns
    so that a change in the machine's load falls on each alike), and CPU-seconds per submission."""
    size, seconds, cost = args.class_size, {jobs: [] for jobs in args.jobs}, []
    notebooks = {f"student{k}": complete for k in range(1, size + 1)}
    for repeat in range(args.repeats):
        for jobs in args.jobs:
            wall, cpu = timed_grading(work / f"jobs{jobs}-{repeat}", notebooks, jobs, args.reference)
            seconds[jobs].append(wall / size)
            cost.append(cpu / size)
            print(f"  --jobs {jobs}, run {repeat + 1}: {wall / size:.1f} s per submission, {cpu / size:.0f} "
                  f"CPU-seconds; load average {load()}", flush=True)  # fmt: skip
    medians = {jobs: statistics.median(each) for jobs, each in seconds.items()}
    for jobs, each in seconds.items():
        listed = ", ".join(f"{s:.1f}" for s in each)
        print(f"--jobs {jobs}: {medians[jobs]:.1f} s per complete submission (median; each: {listed})")
    return medians, cost


def estimate(cpu: float, cores: int, per_submission: dict[int, float]) -> None:
    """What more cores would do. A submission alone takes W seconds and C CPU-seconds, so c cores grade
    one at best every max(W, C) / c seconds (--jobs c: each job waits W, or the cores are busy); the
    efficiency e is what these cores reached of their best, and c cores are assumed to reach as much."""
    alone = per_submission.get(1, max(per_submission.values()))
    best_jobs = min(per_submission, key=per_submission.get)
    efficiency = max(alone, cpu) / cores / per_submission[best_jobs]
    print(f"a submission alone: {alone:.1f} s, {cpu:.0f} CPU-seconds (median); {cores} core(s) at best "
          f"{max(alone, cpu) / cores:.1f} s per submission, measured {per_submission[best_jobs]:.1f} s with "
          f"--jobs {best_jobs}: efficiency {efficiency:.2f}")  # fmt: skip
    print("estimate for more cores, --jobs = cores (6 GiB of memory each), at that efficiency:")
    for more in (4, 8, 16, 32):
        each = max(alone, cpu) / more / efficiency
        print(f"  {more:2} cores, {6 * more:3} GiB: {each:4.1f} s per submission, {3600 / each:4.0f} an hour")


def load() -> str:
    return "/".join(f"{average:.1f}" for average in os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per --jobs value")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="the --jobs values to time")
    parser.add_argument("--class-size", type=int, default=2, help="complete submissions graded per run")
    parser.add_argument("--cpus", type=int, help="pin the grader (and all it starts) to this many cores")
    parser.add_argument("--probe-set", action="store_true", help="also the six varied submissions")
    parser.add_argument("--reference", type=Path, default=grade.REFERENCE, help="the exercise")
    parser.add_argument("--solution", type=Path, default=make_exercise.SOLUTION, help="its solution")
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    cores = len(os.sched_getaffinity(0))
    print(
        f"{cores} core(s), {os.cpu_count()} on the machine; load average {load()} (1/5/15 min) at the start"
    )
    probes = probe_set(args.reference, args.solution)
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as work:
        per_submission, cost = time_jobs(Path(work), probes["complete"], args)
        estimate(statistics.median(cost), cores, per_submission)
        if args.probe_set:
            for jobs in (1, 2):
                seconds, _ = timed_grading(Path(work) / f"probes{jobs}", probes, jobs, args.reference)
                print(f"probe set of {len(probes)}, --jobs {jobs}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
