"""pytest plugin (loaded by `-p tests.harness`): one temporary MLflow server for the whole session.

It starts before collection, so the notebook kernels nbval starts inherit MLFLOW_TRACKING_URI and
SMOKE_TEST; it is stopped by its own pid at the end, pass or fail. A failing test shows its log.
"""

import ctypes
import os
import shutil
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tools import lab

_server = {}


def become_subreaper():
    """Adopt orphaned descendants (e.g. Ray's daemons when a kernel dies) so they can be stopped."""
    PR_SET_CHILD_SUBREAPER = 36
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def pytest_sessionstart(session):
    become_subreaper()
    data_dir = Path(tempfile.mkdtemp(prefix="mlflow-lab-test-"))
    log_path = data_dir / "server.log"
    port = lab.free_port()
    url = f"http://{lab.HOST}:{port}"
    process = lab.start_server(port, data_dir, log_path)
    _server.update(process=process, data_dir=data_dir, log_path=log_path, url=url)
    try:
        lab.wait_until_healthy(url, process, log_path)
    except lab.LabError as error:
        raise pytest.UsageError(f"The temporary MLflow server did not start: {error}") from None
    os.environ["MLFLOW_TRACKING_URI"] = url
    os.environ.setdefault("SMOKE_TEST", "1")


def pytest_sessionfinish(session, exitstatus):
    if not _server:
        return
    lab.stop(_server["process"])
    stop_descendants()
    shutil.rmtree(_server["data_dir"], ignore_errors=True)


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
        report.sections.append(("MLflow server log (tail)", lab.tail(_server["log_path"])))


@pytest.fixture(scope="session")
def mlflow_server():
    """The session's server: its url, data_dir and log_path."""
    return dict(_server)
