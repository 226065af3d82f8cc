"""Strip outputs and execution counts from the lab's notebooks (students run them; diffs stay clean).

make clean-notebooks
"""

import nbformat

from tools import REPO


def clean(notebook: nbformat.NotebookNode) -> bool:
    """Clear the notebook's outputs and execution counts in place; True if there were any."""
    dirty = False
    for cell in notebook.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, dirty = [], None, True
    return dirty


def main() -> int:
    for path in sorted(REPO.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        if clean(notebook):
            nbformat.write(notebook, path)
            print(f"cleaned {path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
