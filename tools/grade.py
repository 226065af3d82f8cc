"""Grade students' exercise notebooks: points per TODO, feedback per student.

    make grade SUBMISSIONS=submissions/            # a folder per student, or a notebook per student
    make grade SUBMISSIONS=submissions/ GRADE_ARGS="--jobs 2 --regrade bob --out grades-week3"

Each submission runs in a sandbox of its own (tools/grading/sandbox.py: a temporary folder, its own
copy of the lab code, an allow-listed environment, memory, task and CPU limits and, as root, a user
id, a view of the file system and a network of its own, made by bubblewrap), in a fresh kernel,
against an MLflow server of its own inside that sandbox, in smoke mode (SMOKE_TEST=1) unless --full.
Only the cells the TODOs need run (tools/grading/exercise.py): each TODO's self-check is the
reference's, found by its tag and loaded afresh before it runs. Several submissions are graded side by
side (--jobs); with RAY_ADDRESS set, they are spread over that Ray cluster as tasks
(tools/grading/cluster.py).

Every file given, or found in a folder given, is a student's submission with a label (the student's
folder or file name; tools/grading/intake.py); one that is not a notebook of this exercise gets 0
points and the status "unreadable". Writes into the output folder (--out, grades/ by default), as
each submission finishes: grades.csv, grades_summary.csv, export.csv (for a learning-management
system), similarity.csv (TODOs identical to the solution or to another student's), history.csv and
feedback/<student>.md (tools/grading/records.py). Run it again and it skips what it graded already
from the same file (--regrade STUDENT to grade one again; the old grade goes to the history).
Exit status 0 when every submission was graded, 1 when the grader failed on some (run it again: it
goes on from there), 2 when there is nothing to grade, 3 when some submission could not be read
(the rest graded: those students must resubmit).
"""

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tools import REPO, processes
from tools.grading import intake, sandbox, submission
from tools.grading.exercise import Exercise
from tools.grading.intake import Submission, UsageError
from tools.grading.records import NOT_GRADED, UNREADABLE, Records
from tools.grading.sandbox import Limits
from tools.grading.similarity import TodoCode
from tools.grading.submission import GraderFailure, Result, Settings, grade_submission

REFERENCE = REPO / "ray_tune.ipynb"  # the exercise as handed out: its TODOs, points and self-checks
ATTEMPTS = 2  # a submission on which the grader's side fails is graded once more
MEMORY_PER_JOB = 6 << 30


def matches(found: Submission, wanted: str) -> bool:
    """Whether --regrade's STUDENT means this submission: its label, or its file's path."""
    return wanted == found.label or Path(wanted).absolute() == found.path.absolute()


def solution_next_to(reference: Path) -> Path | None:
    """The reference solution beside the exercise (ray_tune.ipynb -> ray_tune_solution.ipynb), if any."""
    path = reference.with_name(f"{reference.stem}_solution{reference.suffix}")
    return path if path.is_file() else None


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


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Recorder:
    """Records each submission as it finishes and prints a line: how far the class is, and about how
    long is left (from the pace so far)."""

    def __init__(self, records: Records, total: int, max_points: int):
        self.records, self.total, self.max_points = records, total, max_points
        self.count, self.failures, self.started = 0, 0, time.monotonic()

    def graded(self, found: Submission, result: Result, where: str = "") -> None:
        feedback = self.records.add(found, result)
        on = f" on {where}" if where else ""
        points = f"{result.points}/{self.max_points} points in {result.seconds:.0f} s{on}"
        print(f"{self._step()} {found.label}: {points} ({self._pace()}); feedback: {feedback}", flush=True)

    def failed(self, found: Submission, error: BaseException) -> None:
        self.failures += 1
        why = f"{type(error).__name__}: {error}"
        self.records.not_graded[found.label] = why.splitlines()[0]
        print(
            f"{self._step()} error: {found.label} not graded: {why} ({self._pace()})",
            file=sys.stderr,
            flush=True,
        )

    def _step(self) -> str:
        self.count += 1
        return f"[{self.count}/{self.total}]"

    def _pace(self) -> str:
        elapsed = time.monotonic() - self.started
        left = elapsed / self.count * (self.total - self.count)
        return f"{duration(elapsed)} in all" + (
            f", about {duration(left)} left" if self.count < self.total else ""
        )


def print_table(records: Records, found: list[Submission], graded_now: set[str]) -> None:
    """The class at a glance, then what needs the instructor: unreadable files, identical code."""
    names = [submission.label for submission in found]
    width = max(len("student"), *(len(name) for name in names))
    print(f"\n{'student':{width}}  points  TODOs  {'status':10}  seconds")
    for name in names:
        rows = records.rows.get(name)
        if not rows:
            print(f"{name:{width}}  {'':6}  {'':5}  {NOT_GRADED:10}  (see above; run again)")
            continue
        points = f"{sum(int(r['points']) for r in rows)}/{sum(int(r['max_points']) for r in rows)}"
        passed = f"{sum(r['passed'] == 'True' for r in rows)}/{len(rows)}"
        when = records.details.get(name, {}).get("seconds", "") if name in graded_now else "earlier"
        print(f"{name:{width}}  {points:>6}  {passed:>5}  {records.status(name):10}  {when:>7}")
    unreadable = [s for s in found if records.status(s.label) == UNREADABLE]
    if unreadable:
        print("\ncould not be read (0 points; their feedback asks them to resubmit):")
        for found_one in unreadable:
            print(f"  {found_one.label}: {records.details.get(found_one.label, {}).get('reason', '')}")
    flags, given = records.flags(), set(names)
    flagged = {}
    for (name, todo), same in flags.items():
        if name in given:
            flagged.setdefault(name, []).append(f"{todo} = {', '.join(same)}")
    if flagged:
        print(f"\nidentical code (for you, not in the feedback; {records.similarity}):")
        for name in names:
            if name in flagged:
                print(f"  {name}: {'; '.join(flagged[name])}")


def arguments() -> argparse.ArgumentParser:
    """make grade's options (`--help`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", metavar="SUBMISSION", help="notebooks, or folders of them")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="the folder for grades and feedback")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="submissions graded side by side")
    parser.add_argument(
        "--regrade", action="append", default=[], metavar="STUDENT", help="grade STUDENT (a label) again"
    )
    parser.add_argument("--full", action="store_true", help="run in full mode, not smoke mode")
    parser.add_argument("--cell-timeout", type=float, default=600, help="seconds a cell may run")
    parser.add_argument("--time-limit", type=float, default=1800, help="seconds a submission may run")
    parser.add_argument(
        "--interrupt-grace", type=float, default=10, help="seconds to stop after an interrupt"
    )
    parser.add_argument("--memory", type=float, default=MEMORY_PER_JOB >> 30, help="GiB a submission may use")
    parser.add_argument("--tasks", type=int, default=Limits.tasks, help="processes and threads it may run")
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the exercise as handed out")
    parser.add_argument(
        "--solution",
        type=Path,
        help="its solution, to flag identical code (default: <reference>_solution.ipynb)",
    )
    parser.add_argument("--lab-root", type=Path, default=REPO, help="where the lab code it imports lives")
    return parser


def main(argv=None) -> int:
    args = arguments().parse_args(argv)
    exclusive = contextlib.ExitStack()
    try:
        exercise = Exercise(args.reference, args.lab_root)
        if not exercise.todos:
            raise UsageError(f"{args.reference} has no cells tagged todo-<k>: regenerate it (make exercise)")
        solution = args.solution or solution_next_to(args.reference)
        codes = TodoCode(args.reference, [todo.number for todo in exercise.todos], solution)
        found = intake.find(args.paths, Records.outputs(args.out))
        unknown = [w for w in args.regrade if not any(matches(s, w) for s in found)]
        if unknown:
            labels = ", ".join(s.label for s in found[:10]) + (", ..." if len(found) > 10 else "")
            raise UsageError(f"--regrade {unknown[0]}: no such student among those given ({labels})")
        exclusive.enter_context(one_run_at_a_time(args.out))
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with exclusive:
        if solution is None:
            print(
                f"no solution next to {args.reference}: TODOs are compared between students only (--solution)"
            )
        records = Records(
            args.out, [todo.name for todo in exercise.todos], exercise.max_points, codes.solution
        )
        return grade_and_report(args, exercise, codes, found, records)


@contextlib.contextmanager
def one_run_at_a_time(folder: Path):
    """Hold the output folder's lock: two runs writing the same records would lose grades."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"another grading run is writing into {folder}/: wait for it, or --out elsewhere"
            ) from None
        yield


def grade_and_report(
    args, exercise: Exercise, codes: TodoCode, found: list[Submission], records: Records
) -> int:
    """Read every submission in, grade those not graded yet, print the table; the exit status."""
    limits = Limits(memory_bytes=int(args.memory * 2**30), tasks=args.tasks, cpu_seconds=int(args.time_limit))
    settings = Settings(not args.full, args.cell_timeout, args.time_limit, args.interrupt_grace, limits)
    # The files are read once, into a folder of the grader's own: what is graded is what was hashed.
    with tempfile.TemporaryDirectory(prefix=f"{sandbox.PREFIX}{os.getpid()}-intake-") as copies:
        pending, skipped = [], set()
        for each in found:
            intake.take_in(each, exercise, codes, Path(copies))
            if records.done(each.label, each.sha256) and not any(matches(each, w) for w in args.regrade):
                print(f"{each.label}: graded already (same file), skipped (--regrade {each.label}: again)")
                skipped.add(each.label)
            elif each.problem:
                records.add(each, unreadable(each, exercise))
                print(f"{each.label}: unreadable, 0 points ({each.problem})")
            else:
                pending.append(each)
        status = grade_class(pending, found, exercise, settings, records, args.jobs)
    if status == 130:
        return status
    print_table(records, found, {each.label for each in found} - skipped)
    print(f"\nin {args.out}/: export.csv (student, points, max_points, status) for the course's LMS;")
    print("  grades.csv (per TODO), grades_summary.csv, similarity.csv, history.csv; feedback/ to hand back")
    if status:
        return status
    return 3 if any(records.status(each.label) == UNREADABLE for each in found) else 0


def unreadable(found: Submission, exercise: Exercise) -> Result:
    """0 points, each TODO failed with the reason the file could not be read."""
    return Result(
        found.label, found.sha256, [submission.failed(todo, found.problem) for todo in exercise.todos], 0.0
    )


def grade_class(pending, found, exercise, settings, records, jobs) -> int:
    """Grade the pending submissions, the class's records rewritten at the end; 130 when stopped,
    1 when some could not be graded, else 0."""
    processes.become_subreaper()  # so that what a kernel leaves behind can be stopped
    sandbox.remove_stale()
    # `kill` stops the grading as Ctrl-C does: what is recorded stays, the kernels are stopped.
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    recorder = Recorder(records, len(pending), exercise.max_points)
    order = [each.label for each in found]
    try:
        grade_all(pending, exercise, settings, recorder, jobs)
    except sandbox.SandboxError as error:  # before any submission: nothing graded
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        records.not_graded.update({each.label: "the grader was stopped" for each in pending})
        records.finish(order)
        print(f"\nstopped: {len(records.rows)} student(s) recorded in {records.folder}; run again to go on")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    records.finish(order)
    return 1 if recorder.failures else 0


def grade_all(pending: list[Submission], exercise, settings, recorder: Recorder, jobs: int) -> None:
    """Grade the pending submissions, `jobs` side by side (or over a Ray cluster), recording each as it
    finishes."""
    if os.environ.get("RAY_ADDRESS"):
        from tools.grading import cluster

        return cluster.grade_all(pending, exercise, settings, recorder)
    print(f"grading {len(pending)} submission(s), {jobs} side by side", flush=True)
    print(f"each submission runs as {sandbox.Sandbox.confinement(settings.limits)}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {
            pool.submit(grade_with_retries, each.label, each.copy, exercise, settings): each
            for each in pending
        }
        try:
            for future in as_completed(futures):
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 (one submission's failure stops no other)
                    recorder.failed(futures[future], error)
                    continue
                recorder.graded(futures[future], result)
        except BaseException:  # Ctrl-C or kill: what is graded stays recorded, the rest is stopped
            for future in futures:
                future.cancel()
            submission.stop_all("the grader was stopped")
            raise


if __name__ == "__main__":
    sys.exit(main())
