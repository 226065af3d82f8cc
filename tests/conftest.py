"""Shared fixtures and helpers: an MlflowClient on the session's server, notebooks executed against it,
a private server for tests that must not share it, a service that is not MLflow, and run look-ups."""

import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import mlflow
import pytest
from mlflow import MlflowClient

from tools import lab
from tools.notebooks import REPO, execute_notebook


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
    with lab.temporary_server(tmp_path / "mlflow") as server:
        yield server.url


def find_runs(client, experiment, filter_string: str = "") -> list:
    return client.search_runs([experiment.experiment_id], filter_string, max_results=1000)


def the_run(client, experiment, filter_string: str):
    runs = find_runs(client, experiment, filter_string)
    assert len(runs) == 1, f"expected one run for {filter_string!r}, found {len(runs)}"
    return runs[0]


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def logged_models(experiment, run_id: str) -> list:
    return mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )


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
