"""tools.notebooks' ways into a notebook, on small notebooks made for the test: cells found by their
tags, and tagged cells run in this process (what the logging benchmark does)."""

import nbformat
import pytest

from tools.notebooks import cell_tagged, load_cells


def notebook(*cells) -> nbformat.NotebookNode:
    """A notebook of (source, tags) code cells."""
    made = nbformat.v4.new_notebook()
    made.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)}) for source, tags in cells]
    return made


def test_load_cells_runs_only_the_tagged_cells_in_order(tmp_path):
    path = tmp_path / "small.ipynb"
    cells = [("x = 1", ["bench"]), ("raise RuntimeError('untagged')", []), ("y = x + 1", ["bench", "other"])]
    nbformat.write(notebook(*cells), path)
    namespace = load_cells(path, "bench")
    assert (namespace["x"], namespace["y"]) == (1, 2)
    assert namespace["__name__"] == "small", "functions must not look importable, so that Ray ships them"
    with pytest.raises(LookupError, match="no cell tagged 'missing'"):
        load_cells(path, "missing")


def test_cell_tagged_wants_exactly_one_cell():
    small = notebook(("a = 1", ["first-sweep"]), ("b = 2", ["twice"]), ("c = 3", ["twice"]))
    assert cell_tagged(small, "first-sweep") == 0
    for tag in ("twice", "missing"):
        with pytest.raises(LookupError, match=tag):
            cell_tagged(small, tag)
