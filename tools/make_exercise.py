"""Generate an exercise notebook from its solution, nbgrader-style.

    make exercise                          # write ray_tune.ipynb from ray_tune_solution.ipynb
    python -m tools.make_exercise --check  # exit 1 if ray_tune.ipynb is not what it would write

In code cells of the solution, each region

    ### BEGIN SOLUTION: <hint>
    <code>
    ### END SOLUTION

becomes, at the same indentation,

    # TODO: <hint>
    raise NotImplementedError("<hint>")

and "(solution)" in the title becomes "(exercise)". Edit the solution, never the exercise.
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


def stub(match: re.Match) -> str:
    indent, hint = match["indent"], match["hint"].strip()
    return f"{indent}# TODO: {hint}\n{indent}raise NotImplementedError({hint!r})"


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    exercise = nbformat.from_dict(solution)
    for cell in exercise.cells:
        if cell.cell_type == "code":
            cell.source = REGION.sub(stub, cell.source)
            if "### BEGIN SOLUTION" in cell.source or "### END SOLUTION" in cell.source:
                raise ValueError(f"unbalanced or hint-less SOLUTION markers in cell {cell.get('id')}")
    title = exercise.cells[0]
    title.source = title.source.replace("(solution)", "(exercise)", 1)
    return exercise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the exercise is up to date")
    args = parser.parse_args(argv)
    expected = nbformat.writes(make_exercise(nbformat.read(SOLUTION, as_version=4))) + "\n"
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
