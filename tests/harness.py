"""pytest plugin (loaded by `-p tests.harness`): one temporary MLflow server for the whole session.

It starts before collection, so the notebook kernels nbval starts inherit MLFLOW_TRACKING_URI and
SMOKE_TEST; it is stopped by its own pid at the end, pass or fail. A failing test shows its log.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tools import processes
from tools.mlflow_server import ServerError, tail, temporary_server

_session = contextlib.ExitStack()
_server = {}


def pytest_sessionstart(session):
    processes.become_subreaper()
    data_dir = Path(tempfile.mkdtemp(prefix="mlflow-lab-test-"))
    _session.callback(shutil.rmtree, data_dir, ignore_errors=True)
    try:
        server = _session.enter_context(temporary_server(data_dir))
    except ServerError as error:
        raise pytest.UsageError(f"The temporary MLflow server did not start: {error}") from None
    _server.update(url=server.url, data_dir=data_dir, log_path=server.log_path)
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    os.environ.setdefault("SMOKE_TEST", "1")


def pytest_sessionfinish(session, exitstatus):
    _session.close()  # stops the server, then removes its data
    processes.stop_descendants()  # whatever the suite left running (kernels, Ray), each by its pid


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _server:
        report.sections.append(("MLflow server log (tail)", tail(_server["log_path"])))


@pytest.fixture(scope="session")
def mlflow_server():
    """The session's server: its url, data_dir and log_path."""
    return dict(_server)


def pytest_collection_modifyitems(items):
    """Notebooks that nbval runs whole are in the slow tier."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
