"""The suite's own promises: a failing notebook shows the server log, and nothing it started (server,
kernel, the session's Ray cluster) is left running."""

import os
import re
import subprocess
import sys

import nbformat
import psutil
import pytest

from tests import harness
from tools import REPO

FAILING_NOTEBOOK = nbformat.v4.new_notebook(
    cells=[
        nbformat.v4.new_code_cell("import mlflow\nmlflow.set_experiment('harness-check')"),
        nbformat.v4.new_code_cell("import os, ray\nray.init()\nassert os.environ['RAY_ADDRESS']"),
        nbformat.v4.new_code_cell("assert False, 'this notebook fails on purpose'"),
    ]
)


@pytest.mark.slow
def test_a_failing_run_shows_the_server_log_and_leaves_no_process(tmp_path):
    path = tmp_path / "failing.ipynb"
    nbformat.write(FAILING_NOTEBOOK, path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    command = [sys.executable, "-m", "pytest", str(path), "-c", str(REPO / "pyproject.toml")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    assert result.returncode == 1, result.stdout[-3000:]
    assert "this notebook fails on purpose" in result.stdout
    assert "MLflow server log (tail)" in result.stdout
    # Orphans of the inner run would be adopted by this (subreaper) process.
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not leftovers, [(p.pid, p.cmdline()) for p in leftovers]


def test_every_module_that_reads_a_notebooks_run_runs_beside_it():
    """Side by side, a module that reads what a notebook logged must run in the notebook's group, else it
    would run the notebook a second time on another worker (tests/harness.py, READS)."""
    readers = {
        f"tests/{path.name}": re.search(r'notebook_ran\(\s*"([^"]+)"', path.read_text())
        for path in (REPO / "tests").glob("test_*.py")
    }
    readers = {module: found[1] for module, found in readers.items() if found}
    assert readers and {module: harness.READS.get(module) for module in readers} == readers
