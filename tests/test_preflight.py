"""Bad tracking URIs fail fast, with a message that says what to do, not a 4-minute retry loop."""

import socket
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.conftest import REPO

NOTEBOOKS = ["mlflow_tracking.ipynb", "ray_tune_solution.ipynb", "diffusion.ipynb"]
START_COMMAND = "mlflow server --host 127.0.0.1 --port 8080"
DEADLINE_S = 10


@pytest.fixture(scope="module")
def silent_service():
    """A port that accepts connections but never answers (a hung server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def run_connect_cell_with(notebook_name: str, uris: dict[str, str]) -> dict[str, tuple[float, str]]:
    """Run the notebook up to its `connect` cell once, then that cell once per URI.
    Returns, per case, how long the connect cell took and the error it raised."""
    notebook = nbformat.read(REPO / notebook_name, as_version=4)
    connect = next(i for i, c in enumerate(notebook.cells) if "connect" in c.metadata.get("tags", []))
    connect_cell = notebook.cells[connect]
    client = NotebookClient(notebook, timeout=120, kernel_name="python3")
    results = {}
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells[:connect]):
            client.execute_cell(cell, index)
        for case, uri in uris.items():
            # execute_cell stores the cell it runs at the index it is given
            set_uri = nbformat.v4.new_code_cell(f"import os\nos.environ['MLFLOW_TRACKING_URI'] = {uri!r}")
            client.execute_cell(set_uri, connect)
            start = time.monotonic()
            try:
                client.execute_cell(connect_cell, connect)
                error = ""
            except CellExecutionError as raised:
                error = str(raised)
            results[case] = (time.monotonic() - start, error)
    return results


@pytest.mark.parametrize("notebook_name", NOTEBOOKS)
def test_connect_cell_fails_fast_with_a_fix(notebook_name, closed_port, other_service, silent_service):
    results = run_connect_cell_with(
        notebook_name,
        {
            "no server": closed_port,
            "hung server": silent_service,
            "another service": other_service,
            "not a URL": "127.0.0.1:8080",
        },
    )
    expected = {
        "no server": START_COMMAND,
        "hung server": START_COMMAND,
        "another service": "not an MLflow server",
        "not a URL": "is not an http(s) URL",
    }
    for case, (seconds, error) in results.items():
        assert error, f"{case}: the connect cell did not fail"
        assert expected[case] in error, f"{case}: unhelpful message:\n{error}"
        assert seconds <= DEADLINE_S, f"{case}: took {seconds:.1f} s"
