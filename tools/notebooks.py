"""Run a notebook headlessly (used by the tests and tools), or borrow its definitions."""

import ast
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tools import REPO


def execute_notebook(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """Execute the notebook at path from the repo root; raises CellExecutionError on failure.
    The kernel inherits this process's environment (MLFLOW_TRACKING_URI, SMOKE_TEST, RAY_ADDRESS)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return notebook


def load_definitions(path: Path, *names: str) -> dict:
    """The functions and classes `names` as the notebook defines them, with its imports, so a script
    measures the code the notebook teaches instead of a copy. Executes only the notebook's import
    statements and the top-level definitions in the cells that define `names` (nothing else runs)."""
    cells = [ast.parse(c.source) for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    definitions = (ast.FunctionDef, ast.ClassDef)
    chosen = [
        node
        for cell in cells
        if any(isinstance(node, definitions) and node.name in names for node in cell.body)
        for node in cell.body
        if isinstance(node, definitions)
    ]
    imports = [node for cell in cells for node in cell.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    namespace = {"__name__": Path(path).stem}
    exec(compile(ast.Module(imports + chosen, type_ignores=[]), str(path), "exec"), namespace)
    missing = set(names) - set(namespace)
    if missing:
        raise LookupError(f"{path} defines no {sorted(missing)}")
    return {name: namespace[name] for name in names}
