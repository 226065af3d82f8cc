"""pytest plugin (loaded by `-p tests.harness`): one temporary MLflow server for the whole session.

It starts before collection, so the notebook kernels nbval starts inherit MLFLOW_TRACKING_URI and
SMOKE_TEST; it is stopped by its own pid at the end, pass or fail. A failing test shows its log.
"""

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tools.mlflow_server import ServerError, tail, temporary_server

_session = contextlib.ExitStack()
_server = {}


def become_subreaper():
    """Adopt orphaned descendants (e.g. Ray's daemons when a kernel dies) so they can be stopped."""
    PR_SET_CHILD_SUBREAPER = 36
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def pytest_sessionstart(session):
    become_subreaper()
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
    stop_descendants()


def stop_descendants(timeout: float = 10):
    """Stop whatever the suite started and left running (kernels, Ray), each by its own pid."""
    leftovers = psutil.Process().children(recursive=True)
    for process in leftovers:
        process.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=timeout)
    for process in alive:
        process.kill()


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
