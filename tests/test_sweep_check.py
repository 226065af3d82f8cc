"""TODO 3's self-check, which runs a sweep of its own, on every wrong answer of tests/wrong_answers.py and
on right answers written other ways, in a kernel of its own that runs the solution up to TODO 3 (beside
the walk of tests/test_ray_tune.py, which runs the whole solution): each wrong answer fails with words
that name the mistake, each right one passes, at home (the self-check in the kernel) and graded (the
grader's judge on what the check observed, MLflow read by a process of its own) alike. The other TODOs'
answers need no Ray or server: tests/test_tuning_checks.py tries them in its own process."""

import nbformat
import pytest

from tests.graded import GraderView
from tests.wrong_answers import WRONG_ANSWERS, right_answers, wrong_answers
from tools import make_exercise
from tools.notebooks import cell_tagged, kernel

pytestmark = pytest.mark.slow  # each answer costs a sweep, unless its logger would log elsewhere
TODO = "todo-3"


@pytest.fixture(scope="module")
def tried(mlflow_server, tmp_path_factory) -> dict:
    """answer's name -> (the self-check's outcome in the kernel, the grader's verdict)."""
    view = GraderView(tmp_path_factory.mktemp("observations"))
    solution = nbformat.read(make_exercise.SOLUTION, as_version=4)
    cells = solution.cells[: cell_tagged(solution, TODO)]
    before = [cell.source for cell in cells if cell.cell_type == "code"]
    check = solution.cells[cell_tagged(solution, "check-3")].source
    right = [(f"right answer {k}", source) for k, source in enumerate(right_answers()[TODO], 1)]
    answers = [*wrong_answers()[TODO], *right]
    tried = {}
    with kernel(env=view.environment) as run:
        for source in before:
            outcome = run(source)
            assert not outcome.error_name, f"the solution failed before TODO 3: {outcome.error}"
        for name, source in answers:
            run(source)
            tried[name] = (run(check), view.verdict(TODO))
    return tried


@pytest.mark.parametrize("wrong", WRONG_ANSWERS[TODO], ids=lambda wrong: wrong.name)
def test_the_sweeps_self_check_says_what_is_wrong_at_home_and_graded(tried, wrong):
    outcome, graded = tried[wrong.name]
    assert outcome.error_name == "AssertionError", f"{wrong.name}: {outcome.error or 'it passed'}"
    assert wrong.says in outcome.error_value, f"{wrong.name}: the check said {outcome.error_value!r}"
    assert graded == outcome.error_value, "the grader's verdict differs from the self-check's"


def test_the_sweeps_self_check_passes_right_answers_written_other_ways(tried):
    for name, (outcome, graded) in tried.items():
        if name.startswith("right answer"):
            assert (outcome.error, graded) == ("", ""), name
