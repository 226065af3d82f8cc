"""Grade students' exercise notebooks: points per TODO, feedback per student.

    make grade SUBMISSIONS="alice.ipynb bob.ipynb"   # or SUBMISSIONS=folder/ (every .ipynb below it)
    make grade SUBMISSIONS=folder/ GRADE_ARGS="--jobs 2 --regrade alice"

Each submission runs in a sandbox of its own (tools/grading/sandbox.py: a temporary folder, its own
copy of the lab code, an allow-listed environment, memory, task and CPU limits and, as root, a user
id of its own with the checkout hidden), in a fresh kernel, against an MLflow server of its own, in
smoke mode (SMOKE_TEST=1) unless --full. Only the cells the TODOs need run (tools/grading/exercise.py):
each TODO's self-check is the reference's, found by its tag and loaded afresh before it runs. Several
submissions are graded side by side (--jobs); with RAY_ADDRESS set, they are spread over that Ray
cluster as tasks (tools/grading/cluster.py).

Writes, as each submission finishes: grades.csv (submission, todo, passed, points, max_points,
message, sha256), grades_summary.csv (a row per submission) and feedback/<submission>.md. Run it
again and it skips what it graded already from the same file (--regrade NAME to grade one again).
Exit status 0 when every submission was graded, 1 when the grader failed on some (run it again: it
goes on from there), 2 when there is nothing to grade.
"""

import argparse
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tools import REPO, processes
from tools.grading import sandbox, submission
from tools.grading.exercise import Exercise
from tools.grading.records import Records, progress
from tools.grading.sandbox import Limits
from tools.grading.submission import GraderFailure, Result, Settings, file_hash, grade_submission

REFERENCE = REPO / "ray_tune.ipynb"  # the exercise as handed out: its TODOs, points and self-checks
ATTEMPTS = 2  # a submission on which the grader's side fails is graded once more
MEMORY_PER_JOB = 6 << 30


class UsageError(Exception):
    """Nothing to grade, or a bad argument: printed without a traceback."""


def submissions(paths: list[str]) -> dict[str, tuple[Path, str]]:
    """The notebooks to grade, name -> (path, label): files as given, folders searched for *.ipynb
    (checkpoints left out). The label, for the feedback file, is the path below the folder given."""
    found = {}
    for given in map(Path, paths):
        if given.is_dir():
            notebooks = sorted(p for p in given.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
            if not notebooks:
                raise UsageError(f"{given}/ holds no notebooks (*.ipynb)")
            found.update({str(p): (p, label(p.relative_to(given))) for p in notebooks})
        elif given.exists():
            found[str(given)] = (given, label(Path(given.name)))
        else:
            raise UsageError(f"{given}: no such file or folder")
    if not found:
        raise UsageError('nothing to grade: make grade SUBMISSIONS="a.ipynb b.ipynb" (or a folder)')
    labels = [label for _, label in found.values()]
    if len(set(labels)) < len(labels):  # the same file name in two places: the whole path, then
        found = {name: (path, label(Path(name))) for name, (path, _) in found.items()}
    return found


def label(relative: Path) -> str:
    return "__".join(relative.with_suffix("").parts).lstrip("_")


def matches(name: str, path: Path, wanted: str) -> bool:
    """Whether --regrade's NAME means this submission: its path, file name, or name without .ipynb."""
    return wanted in (name, path.name, path.stem, label(path)) or Path(wanted).resolve() == path.resolve()


def default_jobs() -> int:
    """Side by side, as many as there are cores and memory for."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return max(1, min(os.cpu_count() or 1, memory // MEMORY_PER_JOB))


def grade_with_retries(name: str, path: Path, exercise: Exercise, settings: Settings) -> Result:
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return grade_submission(name, path, exercise, settings)
        except GraderFailure as failure:
            if submission.STOPPING.is_set():
                raise
            print(f"  {name}: {failure} (attempt {attempt} of {ATTEMPTS})", file=sys.stderr, flush=True)
    raise GraderFailure(f"gave up on {name} after {ATTEMPTS} attempts")


def print_table(records: Records, names: list[str], graded_now: set[str]) -> None:
    width = max(len("submission"), *(len(name) for name in names))
    print(f"\n{'submission':{width}}  points  TODOs  seconds")
    for name in names:
        rows = records.rows.get(name)
        if not rows:
            print(f"{name:{width}}  (not graded: see above)")
            continue
        points = f"{sum(int(r['points']) for r in rows)}/{sum(int(r['max_points']) for r in rows)}"
        passed = f"{sum(r['passed'] == 'True' for r in rows)}/{len(rows)}"
        when = records.seconds.get(name, "") if name in graded_now else "earlier"
        print(f"{name:{width}}  {points:>6}  {passed:>5}  {when:>7}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="SUBMISSION", help="notebooks, or folders of them")
    parser.add_argument("--full", action="store_true", help="run in full mode, not smoke mode")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="submissions graded side by side")
    parser.add_argument("--regrade", action="append", default=[], metavar="NAME", help="grade NAME again")
    parser.add_argument("--cell-timeout", type=float, default=600, help="seconds a cell may run")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds a submission may run")
    parser.add_argument(
        "--interrupt-grace", type=float, default=10, help="seconds to stop after an interrupt"
    )
    parser.add_argument("--memory", type=float, default=MEMORY_PER_JOB >> 30, help="GiB a submission may use")
    parser.add_argument("--tasks", type=int, default=Limits.tasks, help="processes and threads it may run")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="the CSV file of grades")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the exercise as handed out")
    parser.add_argument("--lab-root", type=Path, default=REPO, help="where the lab code it imports lives")
    args = parser.parse_args(argv)
    try:
        found = submissions(args.paths)
        exercise = Exercise(args.reference, args.lab_root)
        if not exercise.todos:
            raise UsageError(f"{args.reference} has no cells tagged todo-<k>: regenerate it (make exercise)")
        unknown = [w for w in args.regrade if not any(matches(n, p, w) for n, (p, _) in found.items())]
        if unknown:
            raise UsageError(f"--regrade {unknown[0]}: no such submission among those given")
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    limits = Limits(memory_bytes=int(args.memory * 2**30), tasks=args.tasks, cpu_seconds=int(args.time_limit))
    settings = Settings(not args.full, args.cell_timeout, args.time_limit, args.interrupt_grace, limits)
    summary = args.out.with_name(f"{args.out.stem}_summary.csv")
    records = Records(args.out, summary, args.out.parent / "feedback", [t.name for t in exercise.todos])
    pending = []
    for name, (path, _) in found.items():
        if any(matches(name, path, wanted) for wanted in args.regrade):
            records.forget(name)
        if records.done(name, file_hash(path)):
            print(f"{name}: graded already (same file), skipped; --regrade {path.stem} to grade it again")
        else:
            pending.append(name)
    processes.become_subreaper()  # so that what a kernel leaves behind can be stopped
    sandbox.remove_stale()
    # `kill` stops the grading as Ctrl-C does: what is recorded stays, the kernels are stopped.
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        failures = grade_all(pending, found, exercise, settings, records, args.jobs)
    except sandbox.SandboxError as error:  # before any submission: nothing graded
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        records.finish(list(found))
        print(f"\nstopped: {len(records.rows)} submission(s) recorded in {args.out}; run again to go on")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    records.finish(list(found))
    print_table(records, list(found), set(pending))
    print(f"\nper TODO: {args.out}; per submission: {summary}; for each student: {records.feedback}/")
    return 1 if failures else 0


def grade_all(pending, found, exercise, settings, records, jobs) -> int:
    """Grade the pending submissions, `jobs` side by side (or over a Ray cluster), recording each as it
    finishes. Returns how many could not be graded."""
    if os.environ.get("RAY_ADDRESS"):
        from tools.grading import cluster

        return cluster.grade_all(pending, found, exercise, settings, records)
    failures, started = 0, time.monotonic()
    print(f"grading {len(pending)} submission(s), {jobs} side by side", flush=True)
    print(f"each submission runs as {sandbox.Sandbox.confinement(settings.limits)}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_with_retries, n, found[n][0], exercise, settings): n for n in pending}
        try:
            for future in as_completed(futures):
                name = futures[future]
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 (one submission's failure stops no other)
                    failures += 1
                    print(f"error: {name} not graded: {type(error).__name__}: {error}", file=sys.stderr)
                    continue
                feedback = records.add(result, found[name][1])
                print(progress(result, feedback, exercise.max_points, time.monotonic() - started), flush=True)
        except BaseException:  # Ctrl-C or kill: what is graded stays recorded, the rest is stopped
            for future in futures:
                future.cancel()
            submission.stop_all("the grader was stopped")
            raise
    return failures


if __name__ == "__main__":
    sys.exit(main())
