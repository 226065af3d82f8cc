"""`make lab` / `make server` (tools/lab.py) refuse a taken port and reuse a running server."""

import subprocess
import sys

from tests.conftest import REPO


def run_lab(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "lab.py"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_server_on_a_port_taken_by_something_else_says_so(other_service):
    result = run_lab("server", "--port", other_service.rsplit(":", 1)[1])
    assert result.returncode == 1
    assert "is taken by something that is not an MLflow server" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_reuses_a_running_mlflow_server(mlflow_server):
    result = run_lab("server", "--port", mlflow_server["url"].rsplit(":", 1)[1])
    assert result.returncode == 0
    assert "already answers" in result.stdout
