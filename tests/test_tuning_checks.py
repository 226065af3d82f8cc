"""The tuning notebook's self-checks that need no Ray or server (TODOs 1, 2, 4, 5 and 6), run in this
process on the solution's own code (its cells tagged no-ray): each fails on the exercise's stub and on
every wrong answer of tests/wrong_answers.py with words that name the mistake, and passes the solution
and right answers written other ways. Each verdict is taken twice, as a student sees it (the check
raising in the notebook's process: at home) and as the grader reaches it (its judge, loaded as the
grader loads it, on the observations the check wrote), under both budgets (SMOKE_TEST on and off): the
four must agree. TODO 3's self-check runs a sweep; the walk of tests/test_ray_tune.py tries it."""

import ast
import contextlib
import io

import nbformat
import pytest

from labkit import tuning_judges
from tests.wrong_answers import WRONG_ANSWERS, right_answers, wrong_answers
from tools import REPO, make_exercise
from tools.grading import judging
from tools.grading.exercise import Exercise
from tools.notebooks import cell_tagged, load_cells

CHECKS = {  # TODO -> the self-check, as its cell calls it
    "todo-1": lambda notebook: notebook["check"].search_space(notebook.get("SEARCH_SPACE")),
    "todo-2": lambda notebook: notebook["check"].trainable(notebook["train_digits"], notebook["DATA"]),
    "todo-4": lambda notebook: notebook["check"].asha(notebook["make_asha"]),
    "todo-5": lambda notebook: notebook["check"].searcher(notebook["make_tpe"]),
    "todo-6": lambda notebook: notebook["check"].steady(notebook["steady_accuracy"]),
}
EXERCISE, SOLUTION = (
    nbformat.read(path, as_version=4) for path in (make_exercise.EXERCISE, make_exercise.SOLUTION)
)
STUBS = {todo: EXERCISE.cells[cell_tagged(EXERCISE, todo)].source for todo in CHECKS}
SOLUTION_CELLS = {todo: SOLUTION.cells[cell_tagged(SOLUTION, todo)].source for todo in CHECKS}
WRONG, RIGHT = wrong_answers(), right_answers()


@pytest.fixture(scope="module", params=["1", "0"], ids=["smoke", "full"])
def notebook(request, tmp_path_factory):
    """The solution's cells tagged no-ray, run in this process with SMOKE_TEST as given; the checks write
    their observations to a folder of the module's, as when the grader runs them."""
    folder = tmp_path_factory.mktemp("observations")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMOKE_TEST", request.param)
        patch.setenv(judging.VARIABLE, str(folder))
        with contextlib.redirect_stdout(io.StringIO()):
            namespace = load_cells(make_exercise.SOLUTION, "no-ray")
        namespace["observations"] = folder
        yield namespace


@pytest.fixture(scope="module")
def judges():
    """The judging halves as the grader loads them, from the exercise handed out."""
    return judging.Judges(Exercise(make_exercise.EXERCISE, REPO))


def defined(source: str) -> set[str]:
    """The names a cell defines at its top level."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
    return names


def verdicts(notebook: dict, judges: judging.Judges, todo: str, source: str) -> tuple[str, str]:
    """The TODO cell's source run in the notebook (what the solution's cell defined forgotten first), then
    its self-check: what the student sees ("" when it passes, else the check's message) and what the
    grader's judge says of what the check observed."""
    for name in defined(SOLUTION_CELLS[todo]):
        notebook.pop(name, None)
    with contextlib.suppress(NotImplementedError):  # a stub that raises in its cell, as TODO 1's
        exec(compile(source, todo, "exec"), notebook)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            CHECKS[todo](notebook)
        home = ""
    except AssertionError as wrong:
        home = str(wrong)
    [reference] = [t for t in judges.exercise.todos if t.name == todo]
    try:
        judges.judge(reference, notebook["observations"], read_server=None)
        graded = ""
    except judging.Verdict as wrong:
        graded = str(wrong)
    return home, graded


@pytest.mark.parametrize("todo", CHECKS)
def test_the_self_check_passes_the_solution_at_home_and_graded(notebook, judges, todo):
    assert verdicts(notebook, judges, todo, SOLUTION_CELLS[todo]) == ("", "")


@pytest.mark.parametrize("todo", CHECKS)
def test_the_self_check_passes_right_answers_written_other_ways(notebook, judges, todo):
    for source in RIGHT[todo]:
        assert verdicts(notebook, judges, todo, source) == ("", ""), source


@pytest.mark.parametrize("todo", CHECKS)
def test_the_self_check_fails_on_the_stub_and_says_so_graded_too(notebook, judges, todo):
    home, graded = verdicts(notebook, judges, todo, STUBS[todo])
    assert home and home == graded
    if todo != "todo-1":  # TODO 1's stub raises in its cell, before it defines anything
        assert "NotImplementedError" in home


WRONG_CASES = [pytest.param(todo, w, id=f"{todo}: {w.name}") for todo in CHECKS for w in WRONG_ANSWERS[todo]]


@pytest.mark.parametrize("todo, wrong", WRONG_CASES)
def test_a_wrong_answer_fails_with_the_same_words_at_home_and_graded(notebook, judges, todo, wrong):
    [source] = [source for name, source in WRONG[todo] if name == wrong.name]
    home, graded = verdicts(notebook, judges, todo, source)
    assert wrong.says in home, f"{wrong.name}: the check said {home or 'OK'!r}"
    assert graded == home, "the grader's verdict differs from the self-check's"


def test_the_checks_leave_the_notebooks_budget_as_it_was(notebook):
    budget = {name: notebook[name] for name in ("MAX_EPOCHS", "TRIALS")}
    for todo, check in CHECKS.items():
        exec(compile(SOLUTION_CELLS[todo], todo, "exec"), notebook)
        with contextlib.redirect_stdout(io.StringIO()):
            check(notebook)
    assert {name: notebook[name] for name in budget} == budget


def test_the_judges_know_the_notebooks_facts(notebook):
    """The facts the judges hold (budgets, rungs, the experiment) are what the notebook states."""
    budget = "smoke" if notebook["SMOKE_TEST"] else "full"
    assert tuning_judges.BUDGETS[budget] == {name: notebook[name] for name in ("MAX_EPOCHS", "TRIALS")}
    assert (
        tuning_judges.ASHA_RUNGS == notebook["ASHA_RUNGS"]
        and tuning_judges.EXPERIMENT == notebook["EXPERIMENT"]
    )
