"""Shared fixtures: an MlflowClient on the session's server, notebooks executed against it, a private
server for tests that must not share it, and a service that is not MLflow."""

import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from mlflow import MlflowClient

from tools import REPO, mlflow_server
from tools.notebooks import execute_notebook


@pytest.fixture(scope="session")
def client(mlflow_server) -> MlflowClient:
    return MlflowClient(tracking_uri=os.environ["MLFLOW_TRACKING_URI"])


@pytest.fixture(scope="session")
def notebook_ran(client):
    """Make sure a notebook has logged to this session's server: nbval ran it first in a full
    `pytest`; when a test file runs alone, execute the notebook here."""

    def ensure(notebook: str, experiment_name: str):
        if client.get_experiment_by_name(experiment_name) is None:
            execute_notebook(REPO / notebook)
        return client.get_experiment_by_name(experiment_name)

    return ensure


@pytest.fixture
def private_server(tmp_path):
    """A temporary MLflow server of the test's own, for runs that must not mix with the session's."""
    with mlflow_server.temporary_server(tmp_path / "mlflow") as server:
        yield server.url


class NotMlflow(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def other_service():
    """Something that is not MLflow answers HTTP on a port."""
    server = HTTPServer(("127.0.0.1", 0), NotMlflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
