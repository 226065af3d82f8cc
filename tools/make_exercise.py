"""Generate an exercise notebook from its solution, nbgrader-style.

    make exercise                          # write ray_tune.ipynb from ray_tune_solution.ipynb
    python -m tools.make_exercise --check  # exit 1 if ray_tune.ipynb is not what it would write

In the solution, each TODO is a code cell tagged `todo-<k>` (k = 1, 2, ... in order) that holds one
region

    ### BEGIN SOLUTION: <hint>
    <code>
    ### END SOLUTION

and the code cell right after it, tagged `check-<k>`, is its self-check; the check cell's metadata gives
the TODO's weight in the grade, `"points": <int>`. Cells that no self-check needs (sections that only run
or show experiments) carry the tag `not-graded`: the grader skips them, and every cell after the last
self-check. In the exercise the region becomes, at the same indentation,

    # TODO: <hint>
    raise NotImplementedError("<hint>")

the tags and the rest of each cell's metadata stay (the grader, `make grade`, finds the TODOs, their
self-checks and their points by them), and
"(solution)" in the title becomes "(exercise)". A solution whose regions or tags do not follow these
rules is refused with a message that says which cell is wrong. Edit the solution, never the exercise.
"""

import argparse
import re
import sys

import nbformat

from tools import REPO

SOLUTION, EXERCISE = REPO / "ray_tune_solution.ipynb", REPO / "ray_tune.ipynb"
REGION = re.compile(
    r"^(?P<indent>[ \t]*)### BEGIN SOLUTION: (?P<hint>.+?)\n.*?^[ \t]*### END SOLUTION[ \t]*$",
    flags=re.MULTILINE | re.DOTALL,
)
TAG = re.compile(r"(?P<kind>todo|check)-(?P<k>\d+)")


class SolutionError(ValueError):
    """The solution's TODO regions or tags break the rules above."""


def stub(match: re.Match) -> str:
    indent, hint = match["indent"], match["hint"].strip()
    return f"{indent}# TODO: {hint}\n{indent}raise NotImplementedError({hint!r})"


def describe(index: int, cell) -> str:
    first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
    return f"cell {index} ({first_line[:60]!r})"


def todo_pairs(solution: nbformat.NotebookNode) -> list[tuple[int, int]]:
    """The (todo cell, check cell) indices of each TODO, in order; SolutionError if the tags are wrong."""
    tagged = {}  # (kind, k) -> cell index
    for index, cell in enumerate(solution.cells):
        for tag in cell.metadata.get("tags", []):
            if match := TAG.fullmatch(tag):
                key = (match["kind"], int(match["k"]))
                if key in tagged:
                    raise SolutionError(f"tag {tag} is on cell {tagged[key]} and on {describe(index, cell)}")
                if cell.cell_type != "code":
                    raise SolutionError(f"tag {tag} is on a {cell.cell_type} cell, {describe(index, cell)}")
                tagged[key] = index
        regions = len(REGION.findall(cell.source)) if cell.cell_type == "code" else 0
        markers = cell.source.count("### BEGIN SOLUTION") + cell.source.count("### END SOLUTION")
        if markers != 2 * regions:
            raise SolutionError(f"unbalanced or hint-less SOLUTION markers in {describe(index, cell)}")
        is_todo = any(TAG.fullmatch(t) and t.startswith("todo-") for t in cell.metadata.get("tags", []))
        if regions and not is_todo:
            raise SolutionError(f"{describe(index, cell)} has a SOLUTION region but no todo-<k> tag")
        if is_todo and regions != 1:
            raise SolutionError(
                f"{describe(index, cell)} should hold exactly one SOLUTION region, not {regions}"
            )
    todos = sorted(k for kind, k in tagged if kind == "todo")
    if todos != list(range(1, len(todos) + 1)):
        raise SolutionError(f"the todo-<k> tags should number 1, 2, ... without gaps, not {todos}")
    checks = sorted(k for kind, k in tagged if kind == "check")
    if checks != todos:
        raise SolutionError(f"every todo-<k> needs one check-<k> and no more: todos {todos}, checks {checks}")
    pairs = [(tagged["todo", k], tagged["check", k]) for k in todos]
    if [todo for todo, _ in pairs] != sorted(todo for todo, _ in pairs):
        raise SolutionError("the todo-<k> cells are out of order: todo-1 first, then todo-2, ...")
    for k, (todo, check) in enumerate(pairs, 1):
        points = solution.cells[check].metadata.get("points")
        if not isinstance(points, int) or isinstance(points, bool) or points < 1:
            raise SolutionError(f"check-{k} (cell {check}) needs a whole number of points, not {points!r}")
        after = next(
            (i for i in range(todo + 1, len(solution.cells)) if solution.cells[i].cell_type == "code"), None
        )
        if after != check:
            raise SolutionError(
                f"check-{k} should be the code cell right after todo-{k} (cell {todo}), not cell {check}"
            )
    return pairs


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    todo_pairs(solution)
    exercise = nbformat.from_dict(solution)
    for cell in exercise.cells:
        if cell.cell_type == "code":
            cell.source = REGION.sub(stub, cell.source)
    title = exercise.cells[0]
    title.source = title.source.replace("(solution)", "(exercise)", 1)
    return exercise


def answer_lines(solution_path=SOLUTION) -> dict[str, list[str]]:
    """Per TODO, the lines of its SOLUTION region that the exercise shows nowhere, without whitespace
    or comments, those of 12 characters or more: what no file handed to students may hold."""
    solution = nbformat.read(solution_path, as_version=4)
    shown = re.sub(r"\s+", "", "\n".join(cell.source for cell in make_exercise(solution).cells))
    answers = {}
    for k, (todo, _) in enumerate(todo_pairs(solution), 1):
        [region] = REGION.finditer(solution.cells[todo].source)
        lines = [re.sub(r"\s+", "", line.split("#")[0]) for line in region[0].splitlines()[1:-1]]
        answers[f"todo-{k}"] = [line for line in lines if len(line) >= 12 and line not in shown]
    return answers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the exercise is up to date")
    args = parser.parse_args(argv)
    try:
        expected = nbformat.writes(make_exercise(nbformat.read(SOLUTION, as_version=4))) + "\n"
    except SolutionError as error:
        print(f"{SOLUTION.name}: {error}", file=sys.stderr)
        return 2
    if args.check:
        if not EXERCISE.exists() or EXERCISE.read_text() != expected:
            print(f"{EXERCISE.name} is out of date: run `make exercise`", file=sys.stderr)
            return 1
        print(f"{EXERCISE.name} matches {SOLUTION.name}")
        return 0
    EXERCISE.write_text(expected)
    print(f"wrote {EXERCISE.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
