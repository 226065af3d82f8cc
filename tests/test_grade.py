"""The grader (`make grade`, tools/grade.py) on a small exercise of fast TODOs made for the test, with a
check module of its own (quizlab.checks, imported as the lab's are): what passes, what fails and why,
points and feedback, scratch and reordered cells, submissions that tamper with the checks, snoop on
the grader or bomb the machine, a grading run killed and resumed, --jobs 2 against --jobs 1; then the
lab's own exercise (slow: its kernel starts Ray). Grading over a Ray cluster: tests/test_ray_cluster.py."""

import contextlib
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from textwrap import dedent

import nbformat
import psutil
import pytest

from labkit import ray_settings
from tools import REPO, grade, mlflow_server
from tools.grading import cgroups, judging, sandbox
from tools.grading.exercise import Exercise, read_code_cells

CHECKS = '''\
"""The self-checks of the synthetic exercise, in the grader's protocol (tools/grading/judging.py):
each observes in the kernel and writes what it saw; its judge, in JUDGES, says what is wrong."""

import json
import os


def plain(value):
    """value as JSON holds it: None, a number or a string stays, anything else becomes its repr."""
    kept = value is None or isinstance(value, (int, float, str)) and not isinstance(value, bool)
    return value if kept else repr(value)


def emit(name, observed):
    folder = os.environ.get("LAB_OBSERVATIONS")
    if folder:
        with open(os.path.join(folder, name + ".json"), "w") as file:
            json.dump(observed, file)
    print(JUDGES[name](observed, None))


def answer(value):
    emit("answer", {"value": plain(value)})


def double(function):
    try:
        observed = {"of_3": plain(function(3))}
    except Exception as error:
        observed = {"raised": f"{type(error).__name__}: {error}"}
    emit("double", observed)


def greeting(path):
    try:
        with open(path) as file:
            observed = {"text": file.read()}
    except OSError as error:
        observed = {"raised": f"{type(error).__name__}: {error}"}
    emit("greeting", observed)


def judge_answer(observed, server):
    assert observed["value"] == 42, f"answer should be 42, not {observed['value']!r}"
    return "OK: the answer"


def judge_double(observed, server):
    assert "raised" not in observed, f"double(3) raised {observed.get('raised')}"
    assert observed["of_3"] == 6, f"double(3) should be 6, not {observed['of_3']!r}"
    return "OK: double"


def judge_greeting(observed, server):
    assert "raised" not in observed, f"greeting.txt could not be read ({observed.get('raised')})"
    assert observed["text"] == "hi", f"greeting.txt should say hi, not {observed['text']!r}"
    return "OK: greeting.txt"


JUDGES = {"answer": judge_answer, "double": judge_double, "greeting": judge_greeting}
'''
EXERCISE = [  # (tags, source): a setup cell, three TODOs with their self-checks, cells grading skips
    ([], "import time\nimport quizlab.checks as check"),
    (
        ["todo-1"],
        '# TODO: set `answer` to the answer\nraise NotImplementedError("set `answer` to the answer")',
    ),
    (["check-1"], 'check.answer(globals().get("answer"))'),
    (
        ["todo-2"],
        'def double(x):\n    # TODO: return twice x\n    raise NotImplementedError("return twice x")',
    ),
    (["not-graded"], "double = None  # a demonstration that grading leaves out"),
    (["check-2"], "check.double(double)"),
    (["todo-3"], 'raise NotImplementedError("write hi into greeting.txt")'),
    (["check-3"], 'check.greeting("greeting.txt")'),
    ([], 'raise SystemExit("cells after the last self-check do not run")'),
]
POINTS = {"check-2": 2}  # the others are worth 1
SOLUTION = {
    "todo-1": "answer = 42",
    "todo-2": "def double(x):\n    return 2 * x",
    "todo-3": 'open("greeting.txt", "w").write("hi")',  # a file in the submission's own folder
}
CELL_TIMEOUT_S, GRACE_S, TIME_LIMIT_S, MEMORY_GIB, TASKS = 4, 2, 15, 1, 64
ROOT = sandbox.is_root()


def make_notebook(answers: dict, edit=None) -> nbformat.NotebookNode:
    """The exercise with answers (tag -> source) in place; `edit(cells)` may then change the cells."""
    cells = [nbformat.v4.new_markdown_cell("# A synthetic exercise")]
    for tags, source in EXERCISE:
        tag = tags[0] if tags else ""
        metadata = {"tags": tags, **({"points": POINTS[tag]} if tag in POINTS else {})}
        cells.append(nbformat.v4.new_code_cell(answers.get(tag, source), metadata=metadata))
    if edit:
        edit(cells)
    return nbformat.v4.new_notebook(cells=cells)


def tagged(cells, tag: str) -> int:
    return next(i for i, cell in enumerate(cells) if tag in cell.metadata.get("tags", []))


def scratch_and_reordered(cells):
    """Scratch cells everywhere, the markdown moved, check-3 deleted and check-1 moved above its TODO."""
    cells.insert(tagged(cells, "todo-2") + 1, nbformat.v4.new_code_cell("print(double(2))  # trying it"))
    cells.insert(tagged(cells, "todo-1") + 1, nbformat.v4.new_code_cell("helper = 'scratch'"))
    cells.append(cells.pop(0))
    cells.insert(0, nbformat.v4.new_code_cell("scratch = 1"))
    cells.pop(tagged(cells, "check-3"))
    cells.insert(tagged(cells, "todo-1"), cells.pop(tagged(cells, "check-1")))


def delete_check_2_and_edit_check_1(cells):
    cells.pop(tagged(cells, "check-2"))
    cells[tagged(cells, "check-1")].source = "pass  # looks fine to me"


def slow_scratch(cells):
    """Cells under the cell time limit that together run past the submission's."""
    for _ in range(10):
        cells.insert(tagged(cells, "todo-2"), nbformat.v4.new_code_cell("time.sleep(1.6)"))


TAMPERING = {  # every TODO left unsolved; each tries to pass its self-check another way
    "todo-1": dedent("""\
        check.answer = lambda value: None  # redefine the check, in both places
        import quizlab.checks
        quizlab.checks.answer = check.answer"""),
    "todo-2": dedent("""\
        import importlib.util
        origin = importlib.util.find_spec("quizlab.checks").origin
        try:  # append a lenient check to the module's file
            with open(origin, "a") as file:
                file.write("\\ndef double(function):\\n    pass\\n")
        except OSError as error:
            print(error)
        def double(x):
            return x"""),
    "todo-3": dedent("""\
        import importlib, os
        try:  # rewrite the module on disk, and load it again
            os.chmod(check.__file__, 0o666)
            with open(check.__file__, "w") as file:
                file.write("def answer(v): pass\\ndef double(f): pass\\ndef greeting(p): pass\\n")
        except OSError as error:
            print(error)
        importlib.reload(check)"""),
}
GIVEN = {"PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "PYTHONPATH", "LANG", "SMOKE_TEST", sandbox.MARKER}
GIVEN |= {judging.VARIABLE}
GIVEN |= {"RAY_USAGE_STATS_ENABLED", "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION", *ray_settings.ENVIRONMENT}
KERNEL_SETS = {"JPY_PARENT_PID", "CLICOLOR", "CLICOLOR_FORCE", "FORCE_COLOR", "PAGER", "GIT_PAGER", "TERM"}
KERNEL_SETS |= {"MPLBACKEND", "PYDEVD_USE_FRAME_EVAL"}  # Jupyter's launcher and ipykernel set these
SNOOPING = {  # what it sees decides its grade; todo-1 fails listing the names outside the allow-list
    "todo-1": dedent(f"""\
        import os
        answer = ' '.join(sorted(set(os.environ) - set({sorted(GIVEN | KERNEL_SETS)!r})))"""),
    "todo-2": dedent("""\
        import glob
        def double(x):
            return 2 * x
        leaks = []
        for path in glob.glob("/proc/[0-9]*/environ"):
            try:
                with open(path, "rb") as file:
                    if b"GRADER_SECRET" in file.read():
                        leaks.append(path)
            except OSError:
                pass
        assert not leaks, f"the secret is in {leaks}"
        """),
    "todo-3": dedent(f"""\
        import os
        assert not os.path.exists({str(REPO / "ray_tune_solution.ipynb")!r}), "the checkout is visible"
        open("greeting.txt", "w").write("hi")"""),
}
MEMORY_BOMB = dedent("""\
    import mmap
    block = mmap.mmap(-1, 4 << 30)  # shared memory: not counted by RLIMIT_DATA
    chunk = b"x" * (64 << 20)
    for offset in range(0, len(block), len(chunk)):
        block[offset : offset + len(chunk)] = chunk""")
FORK_LOOP = "import os\nwhile True:\n    if os.fork() == 0:\n        time.sleep(600)"
STUBBORN_LOOP = "while True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"
SUBMISSIONS = {  # file name -> notebook, or raw text for a file that is not one
    "01_solution.ipynb": make_notebook(SOLUTION),
    "02_tampering.ipynb": make_notebook(TAMPERING),
    "03_untouched.ipynb": make_notebook({}),
    "04_wrong_double.ipynb": make_notebook({**SOLUTION, "todo-2": "def double(x):\n    return x + 2"}),
    "05_checks_deleted_or_edited.ipynb": make_notebook(SOLUTION, delete_check_2_and_edit_check_1),
    "06_scratch_and_reordered.ipynb": make_notebook(SOLUTION, scratch_and_reordered),
    "07_endless_loop.ipynb": make_notebook({**SOLUTION, "todo-1": "while True:\n    time.sleep(0.1)"}),
    "08_stubborn_loop.ipynb": make_notebook({**SOLUTION, "todo-2": STUBBORN_LOOP}),
    "09_slow.ipynb": make_notebook(SOLUTION, slow_scratch),
    "10_broken.ipynb": '{"cells": [ this is not JSON',
    "11_snooping.ipynb": make_notebook(SNOOPING),
}
FAKING = {  # each, in the first TODO cell of an untouched exercise, fakes passes inside the kernel
    "an IPython hook that clears each cell's error": dedent("""\
        get_ipython().events.register("post_run_cell", lambda result: setattr(result, "error_in_exec", None))
        """),
    "a shadowed globals() and a check whose every function passes": dedent("""\
        class Passes:
            def __getattr__(self, name):
                return lambda *args, **kwargs: print("OK")
        check = Passes()
        def globals():
            return {"check": check}
        """),
    "a replaced AssertionError": dedent("""\
        import builtins
        builtins.AssertionError = type("NeverRaised", (Exception,), {})
        """),
    "a trace function that jumps over every judge's assertions": dedent("""\
        import sys
        def skip_to_the_return(frame, event, arg):
            if not frame.f_code.co_name.startswith("judge"):
                return None
            last = max(line for _, _, line in frame.f_code.co_lines() if line)  # the judge's return
            if event == "line" and frame.f_lineno < last:
                frame.f_lineno = last
            return skip_to_the_return
        sys.settrace(skip_to_the_return)
        """),
    "answers equal to anything": dedent("""\
        class Yes:
            def __eq__(self, other):
                return True
        answer = Yes()
        def double(x):
            return Yes()
        """),
}
for number, code in enumerate(FAKING.values(), 14):
    SUBMISSIONS[f"{number}_faking.ipynb"] = make_notebook({"todo-1": code})
BREAKS_EVERY_KERNEL = dedent("""\
    import os
    startup = get_ipython().profile_dir.startup_dir  # in the submission's home: run by every kernel
    os.makedirs(startup, exist_ok=True)
    with open(os.path.join(startup, "00-exit.py"), "w") as file:
        file.write("import os\\nos._exit(1)")
    os.kill(os.getpid(), 9)""")
BOMBS = {  # graded apart, with time enough for the machine to run out of memory
    "12_memory_bomb.ipynb": make_notebook({**SOLUTION, "todo-2": MEMORY_BOMB}),
    "13_fork_loop.ipynb": make_notebook({**SOLUTION, "todo-3": FORK_LOOP}),
    "14_breaks_every_kernel.ipynb": make_notebook({**SOLUTION, "todo-2": BREAKS_EVERY_KERNEL}),
}


def schema_invalid(notebook: nbformat.NotebookNode) -> str:
    """The notebook as JSON that nbformat's validation refuses but that reads: no outputs or
    execution counts on code cells, an unknown key, sources as lists of lines."""
    cells = [
        {"cell_type": cell.cell_type, "metadata": dict(cell.metadata), "source": cell.source.splitlines(True)}
        for cell in notebook.cells
    ]
    return json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "unknown": True, "cells": cells})


SUBMISSIONS["12_schema_invalid.ipynb"] = schema_invalid(make_notebook(SOLUTION))


def checkout_fingerprint() -> dict[str, str]:
    """sha256 of every file git tracks or would track (untracked, not ignored) in the checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    files = [REPO / name for name in listed if name and (REPO / name).is_file()]
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def write_exercise(folder: Path) -> tuple[Path, Path]:
    """The reference notebook and its lab (quizlab/) in folder."""
    lab = folder / "lab"
    (lab / "quizlab").mkdir(parents=True)
    (lab / "quizlab" / "__init__.py").write_text("")
    (lab / "quizlab" / "checks.py").write_text(CHECKS)
    reference = folder / "exercise.ipynb"
    nbformat.write(make_notebook({}), reference)
    return reference, lab


def write_submissions(folder: Path, names) -> Path:
    folder.mkdir()
    for name in names:
        content = {**SUBMISSIONS, **BOMBS}[name]
        path = folder / name
        path.write_text(content) if isinstance(content, str) else nbformat.write(content, path)
    return folder


def grade_args(reference: Path, lab: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--reference", str(reference), "--lab-root", str(lab), "--out", str(out),
        "--cell-timeout", str(CELL_TIMEOUT_S), "--interrupt-grace", str(GRACE_S),
        "--time-limit", str(TIME_LIMIT_S), "--memory", str(MEMORY_GIB), "--tasks", str(TASKS), *extra,
    ]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as rows:
        return list(csv.DictReader(rows))


def memory_capped() -> bool:
    """Whether this machine lets the grader cap a submission's memory with a cgroup."""
    probe = cgroups.Cgroups.create(f"{sandbox.PREFIX}{os.getpid()}-probe", MEMORY_GIB << 30, TASKS)
    if probe is None:
        return False
    probe.remove()
    return "memory" in probe.capped


def leftovers() -> list:
    """Processes of this test's sandboxes (marked in their environment: not other graders' running
    beside it), and folders of them."""
    mine = f"{sandbox.PREFIX}{os.getpid()}-"
    processes = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get(sandbox.MARKER, "").startswith(mine):
                processes.append(process)
    return processes + list(Path("/tmp").glob(f"{mine}*"))


@pytest.fixture(scope="module", autouse=True)
def graded_on_this_machine():
    """RAY_ADDRESS unset for these tests (the suite runs a Ray cluster for the notebooks): with it set,
    `make grade` grades over that cluster (tested apart, at the end, on a cluster of its own)."""
    address = os.environ.pop("RAY_ADDRESS", None)
    yield
    if address is not None:
        os.environ["RAY_ADDRESS"] = address


@pytest.fixture(autouse=True)
def each_graded_on_this_machine(monkeypatch):
    """The same for each test: the session's cluster may start between two of them."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade every submission above in one run of the grader (two side by side), as `make grade`
    would, with a secret in the grader's environment."""
    folder = tmp_path_factory.mktemp("grading")
    reference, lab = write_exercise(folder)
    submissions = write_submissions(folder / "submissions", SUBMISSIONS)
    lab_before, checkout_before = (lab / "quizlab" / "checks.py").read_text(), checkout_fingerprint()
    os.environ["GRADER_SECRET"] = "hunter2"
    try:
        status = grade.main([str(submissions), *grade_args(reference, lab, folder, "--jobs", "2")])
    finally:
        del os.environ["GRADER_SECRET"]
    rows = read_rows(folder / "grades.csv")
    return {
        "status": status, "folder": folder,
        "lab_unchanged": (lab / "quizlab" / "checks.py").read_text() == lab_before,
        "checkout_unchanged": checkout_fingerprint() == checkout_before, "leftovers": leftovers(),
        "grades": {(Path(row["submission"]).name, row["todo"]): row for row in rows},
    }  # fmt: skip


def results(graded, submission: str) -> dict:
    """todo -> (passed, message) for one submission."""
    mine = {todo: row for (name, todo), row in graded["grades"].items() if name == submission}
    return {todo: (row["passed"] == "True", row["message"]) for todo, row in mine.items()}


ALL_PASS = {f"todo-{k}": (True, "") for k in (1, 2, 3)}


def test_grading_ran_and_wrote_a_row_per_submission_and_todo(graded):
    assert graded["status"] == 3, "exit status 3: a submission (10_broken) could not be read"
    assert len(graded["grades"]) == 3 * len(SUBMISSIONS)


def test_the_solution_passes_every_todo_and_earns_every_point(graded):
    assert results(graded, "01_solution.ipynb") == ALL_PASS
    points = {
        todo: int(row["points"])
        for (name, todo), row in graded["grades"].items()
        if name == "01_solution.ipynb"
    }
    assert points == {"todo-1": 1, "todo-2": 2, "todo-3": 1}


def test_the_untouched_exercise_passes_none_and_says_what_to_do(graded):
    untouched = results(graded, "03_untouched.ipynb")
    assert not any(passed for passed, _ in untouched.values())
    assert untouched["todo-1"][1] == "TODO cell: NotImplementedError: set `answer` to the answer"


def test_a_wrong_answer_fails_that_todo_only_with_the_checks_message(graded):
    assert results(graded, "04_wrong_double.ipynb") == {
        "todo-1": (True, ""),
        "todo-2": (False, "self-check: double(3) should be 6, not 5"),
        "todo-3": (True, ""),
    }


def test_self_checks_run_as_handed_out_where_the_student_deleted_or_edited_them(graded):
    assert results(graded, "05_checks_deleted_or_edited.ipynb") == ALL_PASS


def test_scratch_cells_moved_markdown_and_a_check_above_its_todo_grade_normally(graded):
    assert results(graded, "06_scratch_and_reordered.ipynb") == ALL_PASS


def test_a_notebook_that_fails_schema_validation_but_reads_is_graded(graded):
    assert results(graded, "12_schema_invalid.ipynb") == ALL_PASS


def test_faking_a_pass_in_the_kernel_earns_nothing(graded):
    """The verdicts are judged in the grader's process on what the checks observed: an IPython hook, a
    shadowed globals(), a replaced AssertionError, sys.settrace or an object equal to anything, each in
    an otherwise untouched exercise, pass no TODO."""
    for number, attack in enumerate(FAKING, 14):
        faked = results(graded, f"{number}_faking.ipynb")
        assert len(faked) == 3 and not any(passed for passed, _ in faked.values()), f"{attack}: {faked}"


def test_tampering_with_the_checks_passes_no_todo_and_changes_nothing_outside(graded):
    tampering = results(graded, "02_tampering.ipynb")
    assert tampering == {
        "todo-1": (False, "self-check: answer should be 42, not None"),
        "todo-2": (False, "self-check: double(3) should be 6, not 3"),
        "todo-3": (
            False,
            "self-check: greeting.txt could not be read (FileNotFoundError: [Errno 2] No such file or "
            "directory: 'greeting.txt')",
        ),
    }
    assert graded["lab_unchanged"], "the grader's copy of the check module was changed"
    assert results(graded, "03_untouched.ipynb")["todo-1"][0] is False  # graded after it, unharmed


def test_grading_leaves_the_checkout_byte_for_byte_as_it_was(graded):
    assert graded["checkout_unchanged"]
    assert not (REPO / "greeting.txt").exists()


def test_student_code_sees_only_the_allow_listed_environment(graded):
    _, message = results(graded, "11_snooping.ipynb")["todo-1"]
    unexpected = message.split("not ", 1)[1].strip("'").split()  # the names it listed, in the check's message
    assert not unexpected, f"not allow-listed: {unexpected}"


@pytest.mark.skipif(
    not ROOT, reason="as another user, the kernel runs as that user: it can read the grader's /proc"
)
def test_as_root_student_code_cannot_read_the_graders_environment_nor_see_the_checkout(graded):
    snooping = results(graded, "11_snooping.ipynb")
    assert snooping["todo-2"] == (True, ""), snooping["todo-2"][1]
    assert snooping["todo-3"] == (True, ""), snooping["todo-3"][1]


def test_an_endless_cell_is_interrupted_and_the_rest_still_graded(graded):
    too_long = f"TODO cell: the cell ran longer than its time limit ({CELL_TIMEOUT_S} s)"
    assert results(graded, "07_endless_loop.ipynb") == {**ALL_PASS, "todo-1": (False, too_long)}


def test_a_cell_that_ignores_the_interrupt_costs_its_todo_and_a_fresh_kernel_grades_the_rest(graded):
    too_long = f"TODO cell: the cell ran longer than its time limit ({CELL_TIMEOUT_S} s)"
    assert results(graded, "08_stubborn_loop.ipynb") == {**ALL_PASS, "todo-2": (False, too_long)}


def test_a_submission_over_its_time_limit_is_stopped(graded):
    slow = results(graded, "09_slow.ipynb")
    limit = f"the submission's time limit ({TIME_LIMIT_S} s) was reached"
    assert slow["todo-1"] == (True, "")
    assert slow["todo-3"] == (False, f"TODO cell: {limit}")


def test_a_memory_bomb_a_fork_loop_and_a_broken_kernel_cost_their_todo_and_leave_nothing(tmp_path):
    reference, lab = write_exercise(tmp_path)
    submissions = write_submissions(tmp_path / "submissions", BOMBS)
    args = grade_args(reference, lab, tmp_path, "--jobs", "2", "--cell-timeout", "60")
    assert grade.main([str(submissions), *args]) == 0
    rows = {(Path(row["submission"]).name, row["todo"]): row for row in read_rows(tmp_path / "grades.csv")}
    bomb = results({"grades": rows}, "12_memory_bomb.ipynb")
    assert bomb["todo-1"] == bomb["todo-3"] == (True, ""), "a fresh kernel graded the rest"
    assert not bomb["todo-2"][0]
    if memory_capped():
        assert bomb["todo-2"][1] == f"TODO cell: out of memory (the submission may use {MEMORY_GIB} GiB)"
    forks = results({"grades": rows}, "13_fork_loop.ipynb")
    assert forks["todo-1"] == forks["todo-2"] == (True, "")
    assert not forks["todo-3"][0]
    broken = results({"grades": rows}, "14_breaks_every_kernel.ipynb")
    assert broken["todo-1"] == (True, "") and not broken["todo-2"][0]
    assert broken["todo-3"][1].startswith("TODO cell: a fresh kernel did not start"), "the student's, graded"
    assert not leftovers(), f"left behind: {leftovers()[:5]}"


def test_no_process_or_folder_of_a_submission_is_left_behind(graded):
    assert not graded["leftovers"], f"left behind: {graded['leftovers'][:5]}"


def test_a_file_that_is_not_a_notebook_gets_rows_not_a_traceback(graded):
    broken = results(graded, "10_broken.ipynb")
    assert len(broken) == 3
    assert all(not passed and message.startswith("not a notebook") for passed, message in broken.values())


def test_a_summary_row_and_a_feedback_file_per_submission(graded):
    summary = {
        Path(row["submission"]).name: row for row in read_rows(graded["folder"] / "grades_summary.csv")
    }
    assert set(summary) == set(SUBMISSIONS)
    assert (summary["01_solution.ipynb"]["points"], summary["01_solution.ipynb"]["max_points"]) == ("4", "4")
    assert summary["04_wrong_double.ipynb"]["points"] == "2"
    feedback = (graded["folder"] / "feedback" / "04_wrong_double.md").read_text()
    assert "**2 / 4 points**" in feedback
    assert "`self-check: double(3) should be 6, not 5`" in feedback
    assert "hint: return twice x" in feedback


def test_the_plan_leaves_out_cells_tagged_not_graded_and_after_the_last_check(tmp_path):
    reference, lab = write_exercise(tmp_path)
    exercise = Exercise(reference, lab)
    steps, problems = exercise.plan(read_code_cells(reference))
    assert [(step.kind, step.todo) for step in steps] == [
        ("cell", None), ("todo", 1), ("check", 1), ("todo", 2), ("check", 2), ("todo", 3), ("check", 3),
    ]  # fmt: skip
    assert problems == {}
    assert exercise.bindings == {"check": ("quizlab.checks", None)} and exercise.max_points == 4


@pytest.mark.parametrize("given, expected", [("empty", "holds no notebooks"), ("missing", "no such file")])
def test_nothing_to_grade_is_a_message_and_exit_status_2(given, expected, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert grade.main([str(tmp_path / given)]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error


# --- resuming, re-grading, side by side -------------------------------------------------------------


def test_a_killed_grading_run_resumes_without_grading_again_what_it_finished(tmp_path):
    reference, lab = write_exercise(tmp_path)
    names = ["01_solution.ipynb", "04_wrong_double.ipynb", "05_pausing.ipynb"]
    pause = lambda cells: cells.insert(1, nbformat.v4.new_code_cell("time.sleep(4)"))  # noqa: E731
    SUBMISSIONS["05_pausing.ipynb"] = make_notebook(SOLUTION, pause)
    submissions = write_submissions(tmp_path / "submissions", names)
    out = tmp_path / "grades.csv"
    command = [
        sys.executable,
        "-m",
        "tools.grade",
        str(submissions),
        *grade_args(reference, lab, tmp_path, "--jobs", "1"),
    ]
    grader = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or len(read_rows(out)) < 6):
        time.sleep(0.2)  # until two submissions are recorded; the third is being graded
    grader.send_signal(signal.SIGKILL)
    grader.wait()
    assert len(read_rows(out)) == 6, "the first two submissions were recorded as they finished"
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert resumed.stdout.count("graded already (same file), skipped") == 2
    rows = read_rows(out)
    assert [(Path(r["submission"]).name, r["todo"]) for r in rows] == [
        (n, f"todo-{k}") for n in names for k in (1, 2, 3)
    ]
    again = subprocess.run(
        [*command, "--regrade", "04_wrong_double"], cwd=REPO, capture_output=True, text=True
    )
    assert again.stdout.count("skipped") == 2 and "04_wrong_double: 2/4 points" in again.stdout
    assert read_rows(out) == rows


def test_one_job_gives_the_same_rows_as_the_two_side_by_side(graded):
    """Some of the submissions the fixture graded two by two, graded again one by one."""
    folder = graded["folder"]
    names = ["01_solution.ipynb", "02_tampering.ipynb", "03_untouched.ipynb", "04_wrong_double.ipynb"]
    paths = [str(folder / "submissions" / name) for name in names]
    args = grade_args(folder / "exercise.ipynb", folder / "lab", folder / "one", "--jobs", "1")
    assert grade.main([*paths, *args]) == 0
    side_by_side = [row for row in read_rows(folder / "grades.csv") if row["submission"] in paths]
    assert read_rows(folder / "one" / "grades.csv") == side_by_side


# --- the lab's exercise -----------------------------------------------------------------------------

LENIENT = dedent("""\
    import importlib, importlib.util
    def lenient(*args, **kwargs):
        return None
    target = importlib.import_module({module!r})
    names = [name for name in dir(target) if not name.startswith("_") and callable(getattr(target, name))]
    for name in names:  # redefine every check
        setattr(target, name, lenient)
    origin = importlib.util.find_spec({module!r}).origin
    try:  # append lenient checks to the module's file, then rewrite it with them
        with open(origin, "a") as file:
            file.write("".join(f"\\ndef {{name}}(*args, **kwargs):\\n    pass\\n" for name in names))
        with open(origin, "w") as file:
            file.write("".join(f"def {{name}}(*args, **kwargs):\\n    pass\\n" for name in names))
    except OSError as error:
        print(error)
""")


LIBRARIES_PATCHED = dedent("""\
    import numpy
    from ray import tune
    numpy.histogram = lambda values, bins, range=None: (numpy.full(bins, len(values) / bins), None)
    numpy.percentile = lambda values, q: min(values)  # every trial passes every rung
    tune.report = lambda metrics, checkpoint=None: None
    tune.Tuner.fit = lambda self: tune.ResultGrid.__new__(tune.ResultGrid)
    """)


def lab_tampering(exercise: Exercise) -> nbformat.NotebookNode:
    """The lab's exercise, every TODO left unsolved, each TODO cell tampering with the check module first,
    the first one patching numpy and ray.tune too."""
    tampering = "".join(LENIENT.format(module=module) for module in exercise.check_modules)
    tampering += "".join(
        f"{alias} = lenient\n" for alias, (_, attribute) in exercise.bindings.items() if attribute
    )
    notebook = nbformat.read(exercise.path, as_version=4)
    for cell in notebook.cells:
        if any(tag.startswith("todo-") for tag in cell.metadata.get("tags", [])):
            patches = LIBRARIES_PATCHED if "todo-1" in cell.metadata["tags"] else ""
            cell.source = tampering + patches + cell.source
    return notebook


# Every way of faking a pass in the kernel at once, in the lab's first TODO cell.
KERNEL_FAKED = "\n".join(
    [
        *FAKING.values(),
        dedent("""\
        import sys
        def skip_judges(frame, event, arg):  # every judging function returns at once, in this kernel
            if not frame.f_code.co_filename.endswith("tuning_judges.py"):
                return None
            last = max(line for _, _, line in frame.f_code.co_lines() if line)
            if event == "line" and frame.f_lineno < last:
                frame.f_lineno = last
            return skip_judges
        sys.settrace(skip_judges)
        class Yes:
            def __eq__(self, other):
                return True
        SEARCH_SPACE = Yes()
        """),
    ]
)


@pytest.mark.slow
def test_the_lab_exercise_tampering_or_faking_passes_no_todo_even_when_a_server_dies(
    tmp_path, monkeypatch, capsys
):
    """The real exercise, every TODO untouched: with every check tampered with (redefined in the kernel,
    appended to and rewritten on disk) and numpy and ray.tune patched so that the checks see what they
    want to; and with every way of faking a pass in the kernel at once (an IPython hook, a shadowed
    globals(), a replaced AssertionError, sys.settrace, objects equal to anything): graded side by side,
    while the first submission's MLflow server is killed. That submission is graded again, no TODO
    passes, and the checkout and its check modules are as they were. (The solution's side, every
    self-check passing at home and graded, is the walk of tests/test_ray_tune.py; a complete submission's
    time is the grading benchmark's. Each way of faking alone: the small exercise's tests above.)"""
    exercise = Exercise(grade.REFERENCE, REPO)
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    untouched = nbformat.read(grade.REFERENCE, as_version=4)
    nbformat.write(lab_tampering(exercise), submissions / "tampering.ipynb")
    faking = nbformat.from_dict(untouched)
    first_todo = next(cell for cell in faking.cells if "todo-1" in cell.metadata.get("tags", []))
    first_todo.source = KERNEL_FAKED + first_todo.source
    nbformat.write(faking, submissions / "kernel_faked.ipynb")
    start, killed = mlflow_server.start, []

    def start_then_kill_the_first(*args, **kwargs):
        server = start(*args, **kwargs)
        if not killed:
            killed.append(server)
            threading.Timer(15, mlflow_server.stop, args=(server,)).start()
        return server

    monkeypatch.setattr(mlflow_server, "start", start_then_kill_the_first)
    before = checkout_fingerprint()
    out = tmp_path / "grades.csv"
    assert grade.main([str(submissions), "--out", str(tmp_path), "--jobs", "2"]) == 0
    assert "(attempt 1 of 2)" in capsys.readouterr().err, (
        "no submission was graded again after its server died"
    )
    assert checkout_fingerprint() == before
    rows = read_rows(out)
    todos = [todo.name for todo in exercise.todos]
    names = ["kernel_faked", "tampering"]
    assert [(Path(r["submission"]).stem, r["todo"]) for r in rows] == [
        (name, todo) for name in names for todo in todos
    ]
    assert not [(r["submission"], r["todo"]) for r in rows if r["passed"] == "True"], "a TODO passed unearned"
    assert all(row["message"] for row in rows), "every failing TODO says why"


def test_a_notebook_saved_with_a_byte_order_mark_reads(tmp_path):
    """Some editors on Windows save UTF-8 with a byte order mark: the notebook is the same."""
    path = tmp_path / "bom.ipynb"
    path.write_text("\ufeff" + nbformat.writes(make_notebook(SOLUTION)), encoding="utf-8")
    assert [cell.source for cell in read_code_cells(path)] == [
        cell.source for cell in make_notebook(SOLUTION).cells if cell.cell_type == "code"
    ]


def test_observations_are_read_as_a_regular_file_never_through_a_link_or_a_pipe(tmp_path):
    """The observations folder is the student's: the grader, as root, must not follow a link, wait on a
    pipe, or read without bound there."""
    (tmp_path / "answer.json").symlink_to("/etc/hostname")
    os.mkfifo(tmp_path / "double.json")
    (tmp_path / "greeting.json").write_bytes(b" " * (judging.MAX_BYTES + 1))
    refused = {"answer": "could not be read", "double": "not a file", "greeting": "larger than"}
    for name, says in refused.items():
        with pytest.raises(judging.Verdict, match=says):
            judging.read_observation(tmp_path, name)
    (tmp_path / "left").mkdir()
    judging.clear(tmp_path)
    assert not list(tmp_path.iterdir())
