"""Grade one submission: its graded cells run in a sandboxed kernel against an MLflow server of its
own; each TODO is judged in this process on what the reference's self-check observed in the kernel
(tools/grading/judging.py), a verdict per TODO with what went wrong."""

import contextlib
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.grading import judging
from tools.grading.exercise import Exercise, NotANotebook, Step, read_code_cells
from tools.grading.sandbox import Limits, Sandbox
from tools.mlflow_server import ServerError, tail
from tools.notebooks import KERNEL_DIED, TIMED_OUT, KernelStartError, Outcome, kernel

RESTARTS = 2  # fresh kernels a submission gets after its kernel dies, before the rest is given up


@dataclass(frozen=True)
class Settings:
    smoke: bool = True
    cell_timeout: float = 600  # seconds a cell may run before it is interrupted
    time_limit: float = 1800  # seconds a submission may run, restarts included
    interrupt_grace: float = 10  # seconds an interrupted cell gets to stop before its kernel is killed
    limits: Limits = field(default_factory=Limits)
    environment: tuple = ()  # (name, value)s the kernel gets besides the sandbox's (RAY_ADDRESS, ...)
    own_user: bool = True  # as root, run the kernel as a user id of its own, the checkout hidden


@dataclass
class Verdict:
    todo: str
    passed: bool
    points: int  # earned
    max_points: int
    message: str  # "" when it passed; else the first line of what went wrong
    hint: str


@dataclass
class Result:
    submission: str
    sha256: str
    verdicts: list[Verdict]
    seconds: float
    notes: list[str] = field(default_factory=list)  # what happened to the submission as a whole
    cpu_seconds: float | None = None  # CPU time of all its processes, where cgroups count it

    @property
    def points(self) -> int:
        return sum(v.points for v in self.verdicts)


class GraderFailure(RuntimeError):
    """The grader's side failed (its MLflow server stopped): the submission is graded again."""


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def first_line(text: str, width: int = 300) -> str:
    lines = text.strip().splitlines()
    return lines[0][:width] if lines else ""


STOPPING = threading.Event()  # set when the grader itself is stopped (Ctrl-C, kill)
_watchdogs: set = set()
_watchdogs_lock = threading.Lock()


def stop_all(reason: str) -> None:
    """Stop every submission being graded; none of them is recorded."""
    STOPPING.set()
    with _watchdogs_lock:
        for watchdog in list(_watchdogs):
            watchdog.grader_failed = True
            watchdog.stop(reason)


class Watchdog:
    """Stops the submission's kernel when it runs out of time or CPU, or when the grader's MLflow
    server stops under it (a failure of the grader's, not the student's)."""

    def __init__(self, settings: Settings, box: Sandbox):
        self.settings, self.box = settings, box
        self.start, self.kernel, self.reason, self.grader_failed = time.monotonic(), None, "", False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        with _watchdogs_lock:
            _watchdogs.add(self)

    def _watch(self):
        while not self._done.wait(1):
            cpu = self.box.cpu_seconds()
            if time.monotonic() - self.start > self.settings.time_limit:
                self.stop(f"the submission's time limit ({self.settings.time_limit:g} s) was reached")
            elif cpu is not None and cpu > self.settings.limits.cpu_seconds:
                self.stop(f"the submission used more than {self.settings.limits.cpu_seconds} CPU-seconds")
            elif self.box.server_stopped():
                self.grader_failed = True
                self.stop("the grader's MLflow server stopped")

    def stop(self, reason: str):
        self.reason = self.reason or reason
        if self.kernel is not None:
            self.kernel.kill(self.reason)

    def close(self):
        self._done.set()
        self._thread.join()
        with _watchdogs_lock:
            _watchdogs.discard(self)


def grade_submission(name: str, path: Path, exercise: Exercise, settings: Settings) -> Result:
    """Grade the notebook at path; raises GraderFailure when the grader's side failed."""
    start, sha256 = time.monotonic(), file_hash(path)
    try:
        cells = read_code_cells(path)
    except NotANotebook as error:
        reason = f"not a notebook: {error}"
        return Result(name, sha256, [failed(todo, reason) for todo in exercise.todos], 0.0)
    steps, problems = exercise.plan(cells)
    environment = {"SMOKE_TEST": "1" if settings.smoke else "0", **dict(settings.environment)}
    with Sandbox(exercise.lab, settings.limits, environment, settings.own_user) as box:
        graded = SubmissionRun(steps, exercise, settings, box)
        notes = graded.run()
        cpu_seconds = box.cpu_seconds()
    verdicts = [
        judge(todo, steps, graded.outcomes, graded.judged, problems.get(todo.number))
        for todo in exercise.todos
    ]
    return Result(name, sha256, verdicts, time.monotonic() - start, notes, cpu_seconds)


class SubmissionRun:
    """The steps of one submission, run in as many kernels as it takes: when the student's code kills a
    kernel, a fresh one runs again the cells before it (not the one that killed it) and goes on. Each
    self-check is judged here as soon as it ran, on what it observed (and what the server then holds)."""

    def __init__(self, steps: list[Step], exercise: Exercise, settings: Settings, box: Sandbox):
        self.steps, self.exercise, self.settings, self.box = steps, exercise, settings, box
        self.judges = judging.Judges(exercise)
        self.outcomes: dict[int, Outcome] = {}
        self.judged: dict[int, str | None] = {}  # check step -> None when it passed, else what is wrong
        self.killers: set[int] = set()  # steps during which a kernel died

    def run(self) -> list[str]:
        """Run the steps (Outcomes in self.outcomes, verdicts in self.judged); returns notes on the run
        as a whole."""
        if self.exercise.uses_mlflow:
            self.box.start_server()  # starts as the kernel does
        notes, self.watchdog = [], Watchdog(self.settings, self.box)
        try:
            for attempt in range(RESTARTS + 1):
                fatal = self.in_a_fresh_kernel()
                if fatal is None or self.watchdog.reason:
                    break
                self.killers.add(fatal)
                notes.append(
                    f"the kernel died in {describe(self.steps[fatal])}: {self.outcomes[fatal].error_value}"
                )
                if attempt < RESTARTS:
                    notes.append("a fresh kernel ran the cells before it again, without it, and went on")
        finally:
            self.watchdog.close()
            self.box.stop_server()
        if self.watchdog.grader_failed:
            log = tail(self.box.server_log, 5) if self.exercise.uses_mlflow else ""
            raise GraderFailure(f"{self.watchdog.reason}\n{log}".strip())
        if self.watchdog.reason:
            notes.append(self.watchdog.reason)
        return notes

    def in_a_fresh_kernel(self) -> int | None:
        """Run the steps not run yet in a fresh kernel, after the cells before them that ran without
        killing a kernel; return the step during which this kernel died, or None."""
        steps, outcomes, box = self.steps, self.outcomes, self.box
        replay = [i for i in outcomes if steps[i].kind != "check" and i not in self.killers]
        pending = [i for i in range(len(steps)) if i not in outcomes]
        oom_before = box.oom_kills()
        with contextlib.ExitStack() as stack:
            try:
                run = stack.enter_context(kernel(
                    box.work, self.settings.cell_timeout, box.env,
                    interrupt_grace=self.settings.interrupt_grace, **box.kernel_options(),
                ))  # fmt: skip
            except KernelStartError as error:
                if not outcomes:  # no student code ran yet: the grader's side failed (graded again)
                    raise GraderFailure(f"its kernel did not start: {error}\n{error.log}".strip()) from None
                why = f"a fresh kernel did not start: {error}"  # what the student's code left may be why
                for i in pending:
                    outcomes[i] = Outcome(steps[i].source, 0.0, KERNEL_DIED, why)
                return None
            self.watchdog.kernel = run
            if self.exercise.uses_mlflow:
                try:
                    box.wait_for_server()
                except ServerError as error:
                    raise GraderFailure(str(error)) from None
            for i in sorted(replay):
                run(steps[i].source)
            for i in pending:
                if self.watchdog.reason:
                    outcomes[i] = Outcome(steps[i].source, 0.0, KERNEL_DIED, self.watchdog.reason)
                    continue
                outcomes[i] = self.check(run, i) if steps[i].kind == "check" else run(steps[i].source)
                if run.dead and not self.watchdog.reason:  # the student's code killed it
                    if box.oom_kills() > oom_before:  # the cause, whatever the runner saw first
                        limit = self.settings.limits.memory_bytes / 2**30
                        outcomes[i].error_name = KERNEL_DIED
                        outcomes[i].error_value = f"out of memory (the submission may use {limit:g} GiB)"
                    return i
        return None

    def check(self, run, index: int) -> Outcome:
        """The reference's self-check, right after its check module is made anew from the snapshot, run
        for what it observes; judged here, unless the kernel stopped it."""
        step = self.steps[index]
        judging.clear(self.box.observations)
        reload = self.exercise.reload_code(self.box.lab_folder)
        if reload:
            loaded = run(reload, store_history=False)
            if loaded.error_name in (TIMED_OUT, KERNEL_DIED):
                return loaded
        outcome = run(step.source)
        if outcome.error_name not in (TIMED_OUT, KERNEL_DIED):
            todo = next(todo for todo in self.exercise.todos if todo.number == step.todo)
            try:
                self.judges.judge(todo, self.box.observations, self.read_server)
                self.judged[index] = None
            except judging.Verdict as wrong:
                stopped = f" (the cell stopped with {outcome.error})" if outcome.error_name else ""
                self.judged[index] = f"{wrong}{stopped}" if "observed nothing" in str(wrong) else str(wrong)
        return outcome

    def read_server(self, module: str, name: str, observed) -> dict:
        """What the submission's MLflow server holds for a check, read by a process of the grader's."""
        if self.box.server_url is None:
            raise judging.Verdict("the self-check reads MLflow, and the exercise uses no MLflow server")
        command = judging.server_facts_command(self.exercise.lab_root, module, name, self.box.server_url)
        read = self.box.run_inside(command, timeout=180, input=json.dumps(observed))
        if read.returncode != 0:
            if self.box.server_stopped():
                raise GraderFailure("the grader's MLflow server stopped")
            said = first_line(read.stderr.strip().splitlines()[-1] if read.stderr.strip() else "")
            raise judging.Verdict(f"what the MLflow server holds could not be read for this check ({said})")
        return json.loads(read.stdout)


def describe(step: Step) -> str:
    kinds = {"todo": f"the TODO {step.todo} cell", "check": f"self-check {step.todo}"}
    return kinds.get(step.kind, f"the cell that starts {first_line(step.source, 60)!r}")


def failed(todo, message: str) -> Verdict:
    return Verdict(todo.name, False, 0, todo.points, message, todo.hint)


def judge(todo, steps: list[Step], outcomes: dict[int, Outcome], judged: dict, problem: str | None):
    """The TODO's verdict: passed when its self-check's observations were judged right here; else the
    reason, from the TODO cell's error first (what the student sees), then from the self-check."""
    if problem:
        return failed(todo, problem)
    check = next(i for i, step in enumerate(steps) if step.kind == "check" and step.todo == todo.number)
    outcome = outcomes.get(check)
    if outcome is None:
        return failed(todo, "its self-check did not run")
    if check in judged and judged[check] is None:
        return Verdict(todo.name, True, todo.points, todo.points, "", todo.hint)
    todo_errors = [
        outcomes[i] for i, step in enumerate(steps)
        if step.kind == "todo" and step.todo == todo.number and i in outcomes and outcomes[i].error_name
    ]  # fmt: skip
    if todo_errors:
        return failed(todo, f"TODO cell: {message_of(todo_errors[0])}")
    if check not in judged:  # stopped by the kernel's time limit, or its death
        return failed(todo, f"self-check: {message_of(outcome)}")
    return failed(todo, f"self-check: {first_line(judged[check])}")


def message_of(outcome: Outcome) -> str:
    if outcome.error_name == TIMED_OUT:
        return f"the cell {first_line(outcome.error_value)}"
    if outcome.error_name == KERNEL_DIED:
        return first_line(outcome.error_value)
    return first_line(outcome.error)
