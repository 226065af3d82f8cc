"""Each TODO judged outside the student's process: the kernel observes, the grader judges.

A check module (the lab's labkit/tuning_checks.py, the tests' quizlab/checks.py) follows one protocol:

- Each self-check function, `check.<name>(...)` in a cell tagged check-<k>, runs the student's code on
  stand-in inputs in the kernel and writes what it observed, as plain JSON, to
  `$LAB_OBSERVATIONS/<name>.json` when the grader sets LAB_OBSERVATIONS; then it judges that itself
  (at home, that is the self-check's verdict).
- `JUDGES[name](observed, server)` is the judging half, a pure function: it raises an AssertionError that
  says what is wrong, or returns what is right. `server` is what `SERVER_FACTS[name](tracking_uri,
  observed)` read from the MLflow server the notebook logs to (None for checks that need none).

The grader runs the reference's check cell in the kernel only for the observations it writes. Nothing
else comes from there: not the cell's outcome, its output, or an object of the student's. It judges in
its own process, with the check module as it read it when it started, and reads the submission's MLflow
server itself (through the sandbox, which reaches it). A submission that fakes a pass in the kernel (a
hook on IPython, a patched numpy, an `__eq__` that always says yes) earns nothing: to pass, the files
must hold what a right answer makes the check observe.
"""

import ast
import json
import os
import resource
import shutil
import stat
import sys
import types
from pathlib import Path

from tools.grading.exercise import Exercise

VARIABLE = "LAB_OBSERVATIONS"  # the folder, in the kernel's environment
MAX_BYTES = 50 << 20  # the largest observation read
FACTS_MEMORY = 2 << 30  # what the process reading a server's facts may allocate


class Verdict(Exception):
    """What judging a TODO found wrong, in the student's terms."""


def called_checks(source: str, aliases: set[str]) -> list[tuple[str, str]]:
    """The (alias, function) of each `alias.function(...)` a check cell calls, in order."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if isinstance(target, ast.Name) and target.id in aliases:
                calls.append((target.id, node.func.attr))
    return calls


class Judges:
    """The judging halves of an exercise's check modules, loaded in this process from the snapshot the
    grader took when it started (never from the kernel's copy)."""

    def __init__(self, exercise: Exercise):
        self.exercise = exercise
        self.modules = {}  # module name -> its namespace, loaded on first use
        self.aliases = {
            alias: module for alias, (module, attribute) in exercise.bindings.items() if attribute is None
        }
        for todo in exercise.todos:
            if not called_checks(todo.check, set(self.aliases)):
                raise ValueError(f"the self-check of {todo.name} calls no function of a check module")

    def module(self, name: str) -> dict:
        if name not in self.modules:
            file = self.exercise.lab.module_file(name)
            namespace = types.ModuleType(name).__dict__
            namespace["__file__"] = file
            source = self.exercise.lab.files[file].decode()
            exec(compile(source, f"{self.exercise.lab_root / file}", "exec"), namespace)
            self.modules[name] = namespace
        return self.modules[name]

    def checks_of(self, todo) -> list[tuple[str, str]]:
        """(module, function) of each check the TODO's self-check calls."""
        return [(self.aliases[alias], name) for alias, name in called_checks(todo.check, set(self.aliases))]

    def judge(self, todo, folder: Path, read_server) -> str:
        """Judge the TODO on what its self-check wrote to folder; raises Verdict saying what is wrong.
        read_server(module, name, observed) returns what the MLflow server holds for that check."""
        said = []
        for module, name in self.checks_of(todo):
            observed = read_observation(folder, name)
            namespace = self.module(module)
            needs_server = name in namespace.get("SERVER_FACTS", {})
            server = read_server(module, name, observed) if needs_server else None
            try:
                said.append(str(namespace["JUDGES"][name](observed, server)))
            except AssertionError as wrong:
                raise Verdict(str(wrong) or "the self-check failed") from None
            except Exception as error:  # noqa: BLE001 (malformed observations fail the TODO, nothing else)
                unjudged = f"what the self-check observed could not be judged ({describe(error)})"
                raise Verdict(unjudged) from None
        return "; ".join(said)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def read_observation(folder: Path, name: str):
    """What a check wrote, read as no more than MAX_BYTES of a regular file: the folder is the student's,
    so the file is opened without following a link or waiting on a pipe, and checked once open."""
    try:
        descriptor = os.open(Path(folder) / f"{name}.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise Verdict("the self-check observed nothing: it did not run to its end") from None
    except OSError as error:
        raise Verdict(f"the self-check's observations could not be read ({describe(error)})") from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise Verdict("the self-check's observations are not a file")
        data = file.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise Verdict(f"the self-check's observations are larger than {MAX_BYTES >> 20} MB")
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise Verdict(f"the self-check's observations could not be read ({describe(error)})") from None


def clear(folder: Path) -> None:
    """Remove what earlier checks (or the student's code) left in the observations folder."""
    for path in Path(folder).iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def server_facts_command(lab_root: Path, module: str, name: str, tracking_uri: str) -> list[str]:
    """The command that reads, in a process of the grader's, what the server holds for a check: it
    runs where the submission's server is reachable (Sandbox.run_inside, from the grader's checkout),
    the observations on its stdin."""
    return [sys.executable, "-m", "tools.grading.judging", str(lab_root), module, name, tracking_uri]


def main(argv: list[str]) -> None:
    """`python -m tools.grading.judging LAB_ROOT MODULE NAME TRACKING_URI < observed.json`: print, as
    JSON, what SERVER_FACTS[NAME] of the lab's check module MODULE reads from the server."""
    lab_root, module, name, tracking_uri = argv
    # It reads what a student's server sends: however much that is, this process stays within bounds.
    resource.setrlimit(resource.RLIMIT_DATA, (FACTS_MEMORY, FACTS_MEMORY))
    sys.path.insert(0, str(Path(lab_root).resolve()))
    observed = json.load(sys.stdin)
    facts = __import__(module, fromlist=["SERVER_FACTS"]).SERVER_FACTS[name](tracking_uri, observed)
    json.dump(facts, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
