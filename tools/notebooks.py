"""Run a notebook headlessly, top to bottom, in a fresh kernel (used by the tests and tools)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tools.lab import REPO


def execute_notebook(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    """Execute the notebook at path from the repo root; raises CellExecutionError on failure.
    The kernel inherits this process's environment (MLFLOW_TRACKING_URI, SMOKE_TEST, RAY_ADDRESS)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return notebook
