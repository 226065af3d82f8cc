"""Small cells, each doing one thing: no code cell of the lab's notebooks is longer than 30 lines."""

import nbformat
import pytest

from tools import REPO

MAX_LINES = 30
NOTEBOOKS = sorted(path.name for path in REPO.glob("*.ipynb"))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_code_cell_is_at_most_30_lines(name):
    notebook = nbformat.read(REPO / name, as_version=4)
    long_cells = {
        index: len(cell.source.splitlines())
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_LINES
    }
    assert not long_cells, f"{name}: code cells (index: lines) longer than {MAX_LINES} lines: {long_cells}"
