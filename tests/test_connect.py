"""Each notebook connects to MLflow with the same short cell, and each that tunes starts Ray with the
same cell; a bad tracking URI fails in seconds with the fix, not after the MLflow client's four
minutes of retries."""

import re
import socket
import time

import mlflow
import nbformat
import pytest

from labkit.tracking import START_SERVER, connect
from tools import REPO

NOTEBOOKS = ["mlflow_tracking.ipynb", "ray_tune_solution.ipynb", "ray_tune.ipynb", "diffusion.ipynb"]
TUNING_NOTEBOOKS = NOTEBOOKS[1:]
DEADLINE_S = 10


def tagged_cell(notebook_name: str, tag: str) -> str:
    notebook = nbformat.read(REPO / notebook_name, as_version=4)
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell.source


def test_every_notebook_connects_with_the_same_short_cell():
    cells = {name: tagged_cell(name, "connect") for name in NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"the connect cells differ: {cells}"
    source = cells[NOTEBOOKS[0]]
    assert "connect()" in source and len(source.splitlines()) <= 5, source


def test_every_notebook_that_tunes_starts_ray_with_the_lab_settings_in_the_same_cell():
    cells = {name: tagged_cell(name, "ray-start") for name in TUNING_NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"the ray-start cells differ: {cells}"
    source = cells[TUNING_NOTEBOOKS[0]]
    assert source.index("LAPTOP") < source.index("ray.init("), "the settings must be set before Ray starts"


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


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no server", START_SERVER),
        ("hung server", START_SERVER),
        ("another service", "not an MLflow server"),
        ("not a URL", "is not an http(s) URL"),
    ],
)
def test_a_bad_tracking_uri_fails_fast_with_a_fix(
    case, expected, closed_port, silent_service, other_service, monkeypatch
):  # fmt: skip
    uri = {
        "no server": closed_port,
        "hung server": silent_service,
        "another service": other_service,
        "not a URL": "127.0.0.1:8080",
    }[case]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises((ConnectionError, ValueError), match=re.escape(expected)):
        connect()
    assert time.monotonic() - start <= DEADLINE_S


def test_a_running_server_is_connected_to(mlflow_server, capsys):
    assert connect() == mlflow_server["url"]
    assert mlflow.get_tracking_uri() == mlflow_server["url"]
    assert f"Connected to the MLflow server at {mlflow_server['url']}" in capsys.readouterr().out
