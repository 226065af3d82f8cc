"""The grader (`make grade`, tools/grade.py), on a small exercise of fast TODOs made for the test:
what passes, what fails and why, and bad input reported instead of crashed on."""

import csv

import nbformat
import pytest

from tools import REPO, grade

EXERCISE = [  # (tag, source): a setup cell, three TODOs and their self-checks
    (None, "import time"),
    ("todo-1", 'raise NotImplementedError("set `answer` to the answer")'),
    ("check-1", 'assert answer == 42, f"answer should be 42, not {answer}"'),
    ("todo-2", 'def double(x):\n    raise NotImplementedError("return twice x")'),
    ("check-2", 'assert double(3) == 6, f"double(3) should be 6, not {double(3)}"'),
    ("todo-3", 'raise NotImplementedError("write hi into greeting.txt")'),
    ("check-3", 'assert open("greeting.txt").read() == "hi", "greeting.txt should say hi"'),
]
SOLUTION = {
    "todo-1": "answer = 42",
    "todo-2": "def double(x):\n    return 2 * x",
    "todo-3": 'open("greeting.txt", "w").write("hi")',  # a file in the submission's own folder
}


def make_notebook(answers: dict, drop: str = "", swap: tuple = ()) -> nbformat.NotebookNode:
    cells = []
    for tag, source in EXERCISE:
        if tag == drop:
            continue
        cell = nbformat.v4.new_code_cell(answers.get(tag, source))
        cell.metadata["tags"] = [tag] if tag else []
        cells.append(cell)
    if swap:
        first, second = ([c.metadata["tags"] for c in cells].index([tag]) for tag in swap)
        cells[first], cells[second] = cells[second], cells[first]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A fake exercise"), *cells])


STUBBORN_LOOP = "while True:\n    try:\n        time.sleep(0.1)\n    except KeyboardInterrupt:\n        pass"
SUBMISSIONS = {  # file name -> notebook, or raw text for a file that is not one
    "01_solution.ipynb": make_notebook(SOLUTION),
    "02_untouched.ipynb": make_notebook({}),
    "03_wrong_double.ipynb": make_notebook({**SOLUTION, "todo-2": "def double(x):\n    return x + 2"}),
    "04_edited_check.ipynb": make_notebook({"check-1": "pass  # looks fine to me"}),
    "05_no_check_2.ipynb": make_notebook(SOLUTION, drop="check-2"),
    "06_moved_check_1.ipynb": make_notebook(SOLUTION, swap=("todo-1", "check-1")),
    "07_endless_loop.ipynb": make_notebook({**SOLUTION, "todo-1": "while True:\n    time.sleep(0.1)"}),
    "08_stubborn_loop.ipynb": make_notebook({**SOLUTION, "todo-2": STUBBORN_LOOP}),
    "09_broken.ipynb": '{"cells": [ this is not JSON',
}
CELL_TIMEOUT_S, TIME_LIMIT_S = 2, 6


@pytest.fixture(scope="module")
def graded(tmp_path_factory, mlflow_server):
    """Grade every submission above in one run of the grader, as `make grade` would."""
    folder = tmp_path_factory.mktemp("submissions")
    reference = folder.parent / "exercise.ipynb"
    nbformat.write(make_notebook({}), reference)
    for name, content in SUBMISSIONS.items():
        path = folder / name
        path.write_text(content) if isinstance(content, str) else nbformat.write(content, path)
    out = folder.parent / "grades.csv"
    status = grade.main([
        str(folder), "--reference", str(reference), "--out", str(out), "--tracking-uri", mlflow_server["url"],
        "--cell-timeout", str(CELL_TIMEOUT_S), "--time-limit", str(TIME_LIMIT_S),
    ])  # fmt: skip
    with open(out, newline="") as rows:
        grades = list(csv.DictReader(rows))
    return status, {(row["submission"].rsplit("/", 1)[1], row["todo"]): row for row in grades}


def results(graded, submission: str) -> dict:
    """todo -> (passed, message) for one submission."""
    _, grades = graded
    mine = {todo: row for (name, todo), row in grades.items() if name == submission}
    return {todo: (row["passed"] == "True", row["message"]) for todo, row in mine.items()}


def test_grading_ran_and_wrote_a_row_per_submission_and_todo(graded):
    status, grades = graded
    assert status == 0
    assert len(grades) == 3 * len(SUBMISSIONS)
    assert all(float(row["seconds"]) >= 0 for row in grades.values())


def test_the_solution_passes_every_todo(graded):
    assert results(graded, "01_solution.ipynb") == {f"todo-{k}": (True, "") for k in (1, 2, 3)}


def test_the_untouched_exercise_passes_none_and_says_what_to_do(graded):
    untouched = results(graded, "02_untouched.ipynb")
    assert not any(passed for passed, _ in untouched.values())
    assert untouched["todo-1"][1] == "TODO cell: NotImplementedError: set `answer` to the answer"


def test_a_wrong_answer_fails_that_todo_only_with_the_checks_message(graded):
    assert results(graded, "03_wrong_double.ipynb") == {
        "todo-1": (True, ""),
        "todo-2": (False, "self-check: AssertionError: double(3) should be 6, not 5"),
        "todo-3": (True, ""),
    }


def test_an_edited_self_check_is_graded_as_handed_out(graded):
    passed, message = results(graded, "04_edited_check.ipynb")["todo-1"]
    assert not passed and "NotImplementedError" in message


def test_a_deleted_or_moved_self_check_is_named(graded):
    deleted = results(graded, "05_no_check_2.ipynb")
    assert deleted["todo-2"] == (False, "the self-check cell (tag check-2) was deleted")
    assert deleted["todo-1"] == deleted["todo-3"] == (True, "")
    moved = results(graded, "06_moved_check_1.ipynb")
    assert moved["todo-1"] == (False, "cells were moved: check-1 is not the code cell right after todo-1")
    assert moved["todo-2"] == moved["todo-3"] == (True, "")


def test_an_endless_cell_is_interrupted_and_the_rest_still_graded(graded):
    looping = results(graded, "07_endless_loop.ipynb")
    too_long = f"TODO cell: the cell ran longer than its time limit ({CELL_TIMEOUT_S} s)"
    assert looping["todo-1"] == (False, too_long)
    assert looping["todo-2"] == looping["todo-3"] == (True, "")


def test_a_submission_over_its_time_limit_is_stopped(graded):
    stubborn = results(graded, "08_stubborn_loop.ipynb")
    assert stubborn["todo-1"] == (True, "")
    limit = f"the submission's time limit ({TIME_LIMIT_S} s) was reached"
    assert stubborn["todo-2"] == (False, f"TODO cell: {limit}")
    assert stubborn["todo-3"] == (False, f"TODO cell: {limit}")


def test_a_file_that_is_not_a_notebook_gets_rows_not_a_traceback(graded):
    broken = results(graded, "09_broken.ipynb")
    assert len(broken) == 3
    assert all(not passed and message.startswith("not a notebook") for passed, message in broken.values())


def test_submissions_run_in_folders_of_their_own():
    """The solution wrote greeting.txt; neither the lab nor the next submission saw it."""
    assert not (REPO / "greeting.txt").exists()


@pytest.mark.parametrize("given, expected", [("empty", "holds no notebooks"), ("missing", "no such file")])
def test_nothing_to_grade_is_a_message_and_exit_status_2(given, expected, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert grade.main([str(tmp_path / given)]) == 2
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error


def test_the_untouched_lab_exercise_passes_no_todo(tmp_path, mlflow_server):
    """The real exercise, graded once as handed out: every TODO fails and says why.
    (The solution's side, every self-check passing and each failing on a wrong answer, is the walk of
    tests/test_ray_tune.py, which runs the solution once.)"""
    out = tmp_path / "grades.csv"
    status = grade.main([str(grade.REFERENCE), "--out", str(out), "--tracking-uri", mlflow_server["url"]])
    assert status == 0
    with open(out, newline="") as rows:
        grades = list(csv.DictReader(rows))
    todos = grade.todo_numbers(nbformat.read(grade.REFERENCE, as_version=4))
    assert [row["todo"] for row in grades] == [f"todo-{k}" for k in todos]
    assert not [row["todo"] for row in grades if row["passed"] == "True"], "a stub passed its self-check"
    assert all(row["message"] for row in grades), "every failing TODO says why"
    assert grades[0]["message"].startswith("TODO cell: NotImplementedError: ")  # the stub's hint
