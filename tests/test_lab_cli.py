"""`make lab` / `make server` (tools/lab.py) refuse a taken port and reuse a running server."""

import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

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


def test_server_listens_on_loopback_only(mlflow_server):
    port = int(mlflow_server["url"].rsplit(":", 1)[1])
    sockets = psutil.net_connections("inet")
    listening = {s.laddr.ip for s in sockets if s.status == psutil.CONN_LISTEN and s.laddr.port == port}
    assert listening == {"127.0.0.1"}


def test_server_refuses_a_foreign_host_header(mlflow_server):
    """MLflow's security middleware: a page on another site cannot reach the API by DNS rebinding."""
    api = f"{mlflow_server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(api, headers={"Host": "attacker.example"}), timeout=5)
    assert refused.value.code == 403
    with urllib.request.urlopen(api, timeout=5) as response:
        assert response.status == 200
