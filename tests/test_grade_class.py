"""The instructor's path through `make grade`, on the small exercise of tests/test_grade.py: a class in
one folder per student, next to loose files and files the grader does not expect, graded once (and
one student again): a label per student in every output, one output folder, the export for a
learning-management system, feedback that names the student, says "not attempted" and "resubmit",
identical code flagged for the instructor only, a regrade kept in the history. Then what needs no
kernel: labels, what a folder yields, the records across runs, the code comparison."""

import contextlib
import io
import os
import re
import subprocess
from pathlib import Path

import nbformat
import pytest

from tests.test_grade import (  # noqa: F401 (fixtures: RAY_ADDRESS unset, grading on this machine)
    SOLUTION,
    each_graded_on_this_machine,
    grade_args,
    graded_on_this_machine,
    make_notebook,
    read_rows,
    write_exercise,
)
from tools import REPO, grade
from tools.grading import intake, similarity
from tools.grading.exercise import read_code_cells
from tools.grading.intake import Submission
from tools.grading.records import Records
from tools.grading.submission import Result, Verdict

BOB = {"todo-1": SOLUTION["todo-1"], "todo-2": "def double(x):\n    return x + 2"}  # todo-3 untouched
UNREADABLE = {  # student -> what their row's reason says
    "carol": "the file looks cut off",
    "dave": "refused: a symbolic link",
    "erin": "refused: not a regular file but a FIFO",
    "frank": "not a notebook: no list of cells",
    "gina": "no notebook (.ipynb) in the folder gina/ (it holds notes.pdf)",
    "ivy": "an empty file",
    "jack": "not a notebook of this exercise: it holds none of its TODO cells",
}


def write_class(folder: Path, solution: Path) -> tuple[Path, Path]:
    """A class folder (a folder per student, some loose files) and a folder of late submissions."""
    students = folder / "class"
    for name, notebook in {"alice": make_notebook(SOLUTION), "bob": make_notebook(BOB)}.items():
        (students / name).mkdir(parents=True)
        nbformat.write(notebook, students / name / "exercise.ipynb")
    (students / "carol").mkdir()
    complete = nbformat.writes(make_notebook(SOLUTION))
    (students / "carol" / "exercise.ipynb").write_text(complete[: len(complete) // 2])  # an upload cut off
    (students / "dave").mkdir()
    (students / "dave" / "exercise.ipynb").symlink_to(solution)
    os.mkfifo(students / "erin.ipynb")  # reading it would wait for a writer forever
    (students / "frank.ipynb").write_text('{"cells": "none", "nbformat": 4}')
    (students / "gina").mkdir()
    (students / "gina" / "notes.pdf").write_text("%PDF-1.4")
    (students / "ivy.ipynb").write_text("")
    another = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])  # another exercise's
    nbformat.write(another, students / "jack.ipynb")
    (students / "kate" / ".ipynb_checkpoints").mkdir(parents=True)  # Jupyter's copy: left out
    nbformat.write(make_notebook({}), students / "kate" / ".ipynb_checkpoints" / "exercise-checkpoint.ipynb")
    nbformat.write(make_notebook(BOB), students / "kate" / "exercise.ipynb")  # bob's answers
    (students / ".DS_Store").write_bytes(b"\0")
    (students / "__MACOSX").mkdir()
    (students / "__MACOSX" / "._alice.ipynb").write_bytes(b"\0")
    late = folder / "late"
    late.mkdir()
    nbformat.write(make_notebook(BOB), late / "Kate.ipynb")  # kate's again, in another folder
    return students, late


@pytest.fixture(scope="module")
def class_graded(tmp_path_factory):
    """The class graded as an instructor would (absolute paths, two side by side), then bob again."""
    folder = tmp_path_factory.mktemp("class")
    reference, lab = write_exercise(folder)
    solution = folder / "exercise_solution.ipynb"  # found next to the exercise
    nbformat.write(make_notebook(SOLUTION), solution)
    students, late = write_class(folder, solution)
    out = folder / "grades"
    command = [str(students), str(late), *grade_args(reference, lab, out, "--jobs", "2")]
    runs = []
    for extra in ([], ["--regrade", "bob"]):
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            status = grade.main([*command, *extra])
        feedback = {path.name: path.read_text() for path in (out / "feedback").iterdir()}
        grades = read_rows(out / "grades.csv")
        runs.append({"status": status, "printed": printed.getvalue(), "grades": grades, "feedback": feedback})
    return {"folder": folder, "out": out, "runs": runs, "command": command}


@pytest.fixture(scope="module")
def table(class_graded) -> dict[str, dict]:
    """export.csv, student -> row."""
    return {row["student"]: row for row in read_rows(class_graded["out"] / "export.csv")}


LABELS = {"alice", "bob", *UNREADABLE, "class__kate", "late__Kate"}


def test_every_file_is_a_student_with_a_label_and_exit_status_3_for_the_unreadable(class_graded, table):
    assert [run["status"] for run in class_graded["runs"]] == [3, 3]
    assert set(table) == LABELS
    graded = {name for name, row in table.items() if row["status"] == "graded"}
    assert graded == {"alice", "bob", "class__kate", "late__Kate"}


def test_the_export_is_ready_for_a_learning_management_system(class_graded, table):
    header = (class_graded["out"] / "export.csv").read_text().splitlines()[0]
    assert header == "student,points,max_points,status"
    assert table["alice"] == {"student": "alice", "points": "4", "max_points": "4", "status": "graded"}
    assert table["bob"] == {"student": "bob", "points": "1", "max_points": "4", "status": "graded"}
    assert table["carol"] == {"student": "carol", "points": "0", "max_points": "4", "status": "unreadable"}
    summary = {row["student"]: row for row in read_rows(class_graded["out"] / "grades_summary.csv")}
    assert (summary["bob"]["todos_passed"], summary["bob"]["todos"]) == ("1", "3")  # no "1/3", read as a date


@pytest.mark.parametrize("student, reason", UNREADABLE.items())
def test_a_file_that_is_no_notebook_of_this_exercise_gets_0_points_says_why(class_graded, student, reason):
    summary = {row["student"]: row for row in read_rows(class_graded["out"] / "grades_summary.csv")}
    assert summary[student]["status"] == "unreadable" and summary[student]["points"] == "0"
    assert reason in summary[student]["reason"]
    feedback = class_graded["runs"][0]["feedback"][f"{student}.md"]
    assert f"# Feedback for {student} " in feedback and "**Please resubmit**" in feedback


def test_the_output_stays_in_its_folder_and_the_symlinked_solution_earns_nothing(class_graded):
    out = class_graded["out"]
    assert sorted(path.name for path in out.iterdir() if path.name != ".lock") == [
        "export.csv", "feedback", "grades.csv", "grades_summary.csv", "history", "history.csv",
        "similarity.csv",
    ]  # fmt: skip
    assert sorted(path.stem for path in (out / "feedback").iterdir()) == sorted(LABELS)
    assert not [label for label in LABELS if Path(f"/{label}.md").exists()]
    dave = [row for row in class_graded["runs"][0]["grades"] if row["student"] == "dave"]
    assert dave and not any(row["passed"] == "True" for row in dave)


def test_feedback_names_the_student_says_not_attempted_and_shows_no_flag(class_graded):
    bob = class_graded["runs"][0]["feedback"]["bob.md"]
    assert bob.startswith("# Feedback for bob (exercise.ipynb)\n")
    assert "- **TODO 2** (0/2): not passed\n  - what went wrong: `self-check: double(3) should be 6" in bob
    assert "- **TODO 3** (0/1): not attempted\n  - hint: write hi into greeting.txt\n" in bob
    assert "NotImplementedError" not in bob, "the stub's own hint is not 'what went wrong'"
    for name, text in class_graded["runs"][0]["feedback"].items():
        assert "solution" not in text.lower() and "identical" not in text
        others = LABELS - {name.removesuffix(".md")}
        assert not [other for other in others if other in text], f"{name} names another student"


def test_identical_code_is_flagged_for_the_instructor_never_an_untouched_stub(class_graded):
    flags = {(row["student"], row["todo"]): row["identical_to"].split() for row in read_rows(
        class_graded["out"] / "similarity.csv")}  # fmt: skip
    assert flags["alice", "todo-2"] == ["solution"] and flags["alice", "todo-3"] == ["solution"]
    assert flags["bob", "todo-2"] == ["class__kate", "late__Kate"]  # the same wrong answer
    assert flags["bob", "todo-1"][0] == "solution"
    assert ("bob", "todo-3") not in flags, "an untouched stub is not attempted, never a flag"
    summary = {row["student"]: row for row in read_rows(class_graded["out"] / "grades_summary.csv")}
    assert summary["alice"]["flags"] == (
        "todo-1: solution bob class__kate late__Kate; todo-2: solution; todo-3: solution"
    )
    attempted = {(r["student"], r["todo"]): r["attempted"] for r in class_graded["runs"][0]["grades"]}
    assert attempted["bob", "todo-3"] == "False" and attempted["bob", "todo-2"] == "True"


def test_a_regrade_by_student_label_keeps_the_old_grade_in_the_history(class_graded):
    first, second = class_graded["runs"]
    assert second["grades"] == first["grades"], "the same file grades the same"
    history = read_rows(class_graded["out"] / "history.csv")
    assert [(row["student"], row["todo"], row["why"]) for row in history] == [
        ("bob", f"todo-{k}", "graded again (--regrade)") for k in (1, 2, 3)
    ]
    assert all(row["graded_at"] and row["replaced_at"] for row in history)
    [kept] = (class_graded["out"] / "history").iterdir()
    assert kept.name.startswith("bob@") and kept.read_text() == first["feedback"]["bob.md"]


def test_each_submission_prints_a_progress_line_with_the_time_left(class_graded):
    first, second = (run["printed"] for run in class_graded["runs"])
    assert re.search(r"^\[1/4\] \S+: \d/4 points in \d+ s \(\d+ s in all, about \d+ s left\)", first, re.M)
    assert re.search(r"^\[4/4\] ", first, re.M) and "[1/1] bob: 1/4 points" in second
    assert second.count("graded already (same file), skipped") == len(LABELS) - 1


def test_regrade_refuses_what_names_no_student_and_lists_the_labels(class_graded, capsys):
    assert grade.main([*class_graded["command"], "--regrade", "exercise"]) == 2  # every file's name
    error = capsys.readouterr().err
    assert "--regrade exercise: no such student" in error and "alice, bob" in error


def test_a_second_run_into_the_same_output_folder_is_refused_while_one_runs(class_graded, capsys):
    with grade.one_run_at_a_time(class_graded["out"]):
        assert grade.main(class_graded["command"]) == 2
    assert "another grading run is writing into" in capsys.readouterr().err


def test_the_default_output_folder_is_grades_and_git_ignored():
    assert grade.arguments().parse_args([]).out == Path("grades")
    ignored = subprocess.run(["git", "check-ignore", "-q", "grades/export.csv"], cwd=REPO)
    assert ignored.returncode == 0


# --- what needs no kernel ----------------------------------------------------------------------------


def test_labels_come_from_the_students_folder_or_file_and_are_unique(tmp_path):
    for path in ["a/bob/ray_tune.ipynb", "a/Bob.ipynb", "a/carol/v1.ipynb", "a/carol/sub/v2.ipynb",
                 "b/alice.ipynb", "a/alice.ipynb", "a/we ird:name?.ipynb", "a/%%%.ipynb"]:  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    found = intake.find([str(tmp_path / "a"), str(tmp_path / "b")], [])
    assert [(s.label, str(s.path.relative_to(tmp_path))) for s in found] == [
        ("submission", "a/%%%.ipynb"), ("a__Bob", "a/Bob.ipynb"), ("a__alice", "a/alice.ipynb"),
        ("a__bob-2", "a/bob/ray_tune.ipynb"), ("carol__sub__v2", "a/carol/sub/v2.ipynb"),
        ("carol__v1", "a/carol/v1.ipynb"), ("we ird_name", "a/we ird:name?.ipynb"),
        ("b__alice", "b/alice.ipynb"),
    ]  # fmt: skip


def test_a_folder_given_twice_gets_numbered_labels_and_the_output_folder_is_left_out(tmp_path):
    (tmp_path / "alice.ipynb").write_text("{}")
    out = tmp_path / "grades"
    (out / "feedback").mkdir(parents=True)
    (out / "feedback" / "alice.md").write_text("")
    (out / "grades.csv").write_text("")
    found = intake.find([str(tmp_path), str(tmp_path)], Records.outputs(out))
    assert [s.label for s in found] == [f"{tmp_path.name}__alice", f"{tmp_path.name}__alice-2"]


def submission(label: str, codes: dict[str, str], problem: str = "") -> tuple[Submission, Result]:
    """A graded submission made up: every TODO passed, with code digests as given."""
    made = Submission(label, Path(f"{label}.ipynb"), Path("."), problem, sha256=label + "-file")
    made.codes = {todo: similarity.Code(bool(code), code) for todo, code in codes.items()}
    verdicts = [Verdict(todo, not problem, 0 if problem else 1, 1, problem, "") for todo in codes]
    return made, Result(label, made.sha256, verdicts, 1.0)


def test_records_flag_code_identical_to_earlier_rows_and_keep_what_a_new_file_replaced(tmp_path):
    todos = ["todo-1", "todo-2"]
    records = Records(tmp_path, todos, 2, {"todo-1": "s1"})
    records.add(*submission("ann", {"todo-1": "s1", "todo-2": "x"}))
    records.not_graded["ben"] = "GraderFailure: the grader's MLflow server stopped"
    records.finish(["ann", "ben"])
    export = {row["student"]: row for row in read_rows(tmp_path / "export.csv")}
    assert export["ben"] == {"student": "ben", "points": "", "max_points": "2", "status": "not graded"}
    later = Records(tmp_path, todos, 2, {"todo-1": "s1"})  # the next run
    assert later.done("ann", "ann-file") and not later.done("ann", "another file")
    later.add(*submission("cid", {"todo-1": "y", "todo-2": "x"}))
    assert later.flags() == {
        ("ann", "todo-1"): ["solution"], ("ann", "todo-2"): ["cid"], ("cid", "todo-2"): ["ann"],
    }  # fmt: skip
    new_file, result = submission("ann", {"todo-1": "", "todo-2": "z"})
    new_file.sha256 = result.sha256 = "new"
    later.add(new_file, result)
    assert {row["why"] for row in read_rows(tmp_path / "history.csv")} == {"a new file"}
    assert ("ann", "todo-1") not in later.flags(), "a stub is never flagged"


def test_records_of_another_exercise_go_to_the_history_not_away(tmp_path):
    Records(tmp_path, ["todo-1"], 1, {}).add(*submission("ann", {"todo-1": "a"}))
    records = Records(tmp_path, ["todo-1", "todo-2"], 2, {})
    assert not records.rows
    assert [row["student"] for row in read_rows(tmp_path / "history.csv")] == ["ann"]


def test_code_is_compared_as_tokens_without_comments_or_layout():
    same = similarity.normalised("x = f(1,  2)  # mine\n\nif x:\n    y = 2\n")
    assert same == similarity.normalised("x=f(1,2)\nif x:\n  y = 2")
    assert same != similarity.normalised("x = f(1, 2)\nif x:\n    y = 3\n")
    assert similarity.normalised("%time x = (1,") == ["%time", "x", "=", "(1,"]  # not Python: its words


def test_an_untouched_stub_is_not_attempted_and_a_deleted_todo_has_no_code(tmp_path):
    reference, _ = write_exercise(tmp_path)
    codes = similarity.TodoCode(reference, [1, 2, 3], None)
    notebook = make_notebook({"todo-1": "answer = 42  # at last"})
    notebook.cells = [c for c in notebook.cells if "todo-3" not in c.metadata.get("tags", [])]
    path = tmp_path / "mine.ipynb"
    nbformat.write(notebook, path)
    found = codes.of(read_code_cells(path))
    assert found["todo-1"].attempted and not found["todo-2"].attempted and "todo-3" not in found
    assert found["todo-1"].digest == similarity.digest(similarity.normalised("answer = 42"))
