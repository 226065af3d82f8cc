"""The code of each TODO, compared: whether the student touched the stub at all, and whose code a
TODO's is identical to (the reference solution's, other students'), for the instructor's eyes only.

Code is compared as Python tokens: comments, blank lines and spacing do not count, indentation and
everything else does. A student's TODO is the code of the cells tagged todo-<k> in their notebook;
the solution's is its todo-<k> cell (its `### BEGIN/END SOLUTION` markers are comments). A TODO whose
code is the exercise's stub was not attempted: it has no digest, and is never flagged.
"""

import hashlib
import io
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tools.grading.exercise import TODO_TAG, Cell, NotANotebook, read_code_cells

SOLUTION = "solution"  # how the reference solution is named among the students a TODO is identical to
LAYOUT = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
MARKERS = {tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>", tokenize.NEWLINE: "<newline>"}


@dataclass(frozen=True)
class Code:
    attempted: bool
    digest: str  # of the normalised code, "" when not attempted


def normalised(source: str) -> list[str]:
    """The code's tokens without comments and layout (indentation kept as markers); for code that
    Python cannot tokenize (a magic, an unclosed bracket), its words line by line, comments cut."""
    try:
        return [
            MARKERS.get(token.type, token.string)
            for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type not in LAYOUT
        ]
    except (tokenize.TokenError, SyntaxError):
        return [word for line in source.splitlines() for word in line.split("#", 1)[0].split()]


def code_of(cells: list[Cell], number: int) -> list[str]:
    return [token for cell in cells if cell.number(TODO_TAG) == number for token in normalised(cell.source)]


def digest(tokens: list[str]) -> str:
    return hashlib.sha256("\0".join(tokens).encode()).hexdigest()[:16]


class TodoCode:
    """The exercise's stubs and the solution's code per TODO, to compare a submission's with."""

    def __init__(self, reference: Path, numbers: list[int], solution: Path | None):
        stubs = read_code_cells(reference)
        self.numbers = numbers
        self.stubs = {k: digest(code_of(stubs, k)) for k in numbers}
        self.solution = {}
        if solution is not None:
            try:
                cells = read_code_cells(solution)
            except NotANotebook as error:
                raise ValueError(f"{solution}: {error}") from None
            self.solution = {f"todo-{k}": digest(code_of(cells, k)) for k in numbers if code_of(cells, k)}

    def of(self, cells: list[Cell]) -> dict[str, Code]:
        """Per TODO of a submission's cells (none for a TODO whose cell was deleted): attempted or not,
        and its code's digest."""
        codes = {}
        for k in self.numbers:
            if any(cell.number(TODO_TAG) == k for cell in cells):
                attempted = digest(code_of(cells, k)) != self.stubs[k]
                codes[f"todo-{k}"] = Code(attempted, digest(code_of(cells, k)) if attempted else "")
        return codes


def identical(
    digests: dict[tuple[str, str], str], solution: dict[str, str]
) -> dict[tuple[str, str], list[str]]:
    """(student, todo) -> the solution and the other students whose code for that TODO is the same,
    from (student, todo) -> digest ("" for a TODO not attempted)."""
    holders = defaultdict(list)
    for (student, todo), code in digests.items():
        if code:
            holders[todo, code].append(student)
    flags = {}
    for (student, todo), code in digests.items():
        if not code:
            continue
        same = [SOLUTION] if solution.get(todo) == code else []
        same += [other for other in holders[todo, code] if other != student]
        if same:
            flags[student, todo] = same
    return flags
