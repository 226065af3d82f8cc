"""Committed notebooks are clean: no outputs, no execution counts (students run them)."""

import nbformat
import pytest

from tools import REPO

NOTEBOOKS = sorted(REPO.glob("*.ipynb"))


def test_the_lab_has_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {REPO}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs or execution counts: `make clean-notebooks`"
