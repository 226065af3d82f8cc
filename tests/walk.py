"""The walk: a solution notebook executed cell by cell in one kernel, nbgrader's `validate --invert`
style, each TODO's self-check tried on the exercise's stub and on other answers before the solution."""

from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from tools.notebooks import Outcome, cell_tagged


@dataclass
class TodoWalk:
    """One TODO of a walk: its self-check run after the exercise's stub, after each other answer (by
    name), and after the solution's code; and what `judge` said after each."""

    todo: str
    after_stub: Outcome
    after_answers: dict[str, Outcome] = field(default_factory=dict)
    after_solution: Outcome | None = None
    judged: dict[str, object] = field(default_factory=dict)  # "stub", an answer's name, or "solution"


def walk_solution(
    solution: Path, exercise: Path, answers: dict, run, twice: tuple[str, ...] = (), judge=None
) -> tuple[list[TodoWalk], list[Outcome]]:
    """Execute the solution's code cells in order with `run` (from tools.notebooks.kernel). Before the
    cell tagged todo-<k>: the exercise's stub of it, then its self-check (the cell tagged check-<k>);
    then for each (name, source) in answers["todo-<k>"], that source and the self-check; then the
    solution's cell and, as the notebook goes on, its self-check. After each self-check, judge(todo),
    when given, says what it makes of it (the grader's view). A cell carrying a tag in `twice` runs a
    second time right after the first (the cell must be re-runnable).

    Returns a TodoWalk per TODO and the Outcome of every cell of the solution in order (a cell run twice
    gives two); stops after the first cell of the solution that fails (its Outcome is the last one)."""
    solution_nb, exercise_nb = nbformat.read(solution, as_version=4), nbformat.read(exercise, as_version=4)
    walks, cells = {}, []
    for cell in solution_nb.cells:
        if cell.cell_type != "code":
            continue
        tags = cell.metadata.get("tags", [])
        todo = next((tag for tag in tags if tag.startswith("todo-")), None)
        check = next((tag for tag in tags if tag.startswith("check-")), None)
        if todo:
            check_source = solution_nb.cells[cell_tagged(solution_nb, f"check-{todo[5:]}")].source
            run(exercise_nb.cells[cell_tagged(exercise_nb, todo)].source)
            walks[todo] = TodoWalk(todo, run(check_source))
            walks[todo].judged["stub"] = judge and judge(todo)
            for name, source in answers.get(todo, []):
                run(source)
                walks[todo].after_answers[name] = run(check_source)
                walks[todo].judged[name] = judge and judge(todo)
        for _ in range(2 if set(tags) & set(twice) else 1):
            outcome = run(cell.source)
            cells.append(outcome)
            if outcome.error_name:
                return list(walks.values()), cells
        if check:
            walks[f"todo-{check[6:]}"].after_solution = outcome
            walks[f"todo-{check[6:]}"].judged["solution"] = judge and judge(f"todo-{check[6:]}")
    return list(walks.values()), cells
