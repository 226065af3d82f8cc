"""pytest plugin (loaded by `-p tests.harness`): one temporary MLflow server and one Ray cluster for
the whole session (for each worker, when pytest-xdist runs the tests side by side: `make test` runs
two).

The server starts before collection, so the notebook kernels nbval starts inherit MLFLOW_TRACKING_URI
and SMOKE_TEST. The Ray cluster (`ray start --head`, the lab's laptop settings) starts before the
first test of the slow tier, which is what runs notebooks and sweeps, and every notebook joins it
through RAY_ADDRESS instead of starting Ray of its own: `pytest -m "not slow"` never pays for it.
Both are stopped by their own pids at the end, pass or fail. A failing test shows the server's log.

Side by side, each worker runs whole groups: a notebook with the test modules that read what it logged
(READS), else a test module, so that each notebook runs once and a module's fixtures are made once. The
longest groups start first.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from labkit import ray_settings
from tools import processes, ray_cluster
from tools.mlflow_server import ServerError, tail, temporary_server

_session = contextlib.ExitStack()
_server = {}
_ray_cluster = {}


def hands_out_tests(config) -> bool:
    """Whether this process is pytest-xdist's controller: it runs no test, so it needs no server."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


def pytest_sessionstart(session):
    if hands_out_tests(session.config):
        return
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
    os.environ.pop("RAY_ADDRESS", None)  # the tests never run on a cluster of the user's
    os.environ.update(ray_settings.ENVIRONMENT)  # the lab's Ray settings, as `make lab` gives them


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before the first slow test (and before nbval starts a notebook's kernel), start the cluster."""
    if not _ray_cluster and item.get_closest_marker("slow"):
        try:
            _ray_cluster.update(_session.enter_context(ray_cluster.local_cluster()))
        except ray_cluster.RayStartError as error:
            raise pytest.UsageError(f"The test session's Ray cluster did not start: {error}") from None
        os.environ.update(_ray_cluster)  # its address and token, for every kernel started from now on


def pytest_sessionfinish(session, exitstatus):
    if hands_out_tests(session.config):
        return
    _session.close()  # stops the Ray cluster and the server, then removes the server's data
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


# The test modules that read what a notebook logged (through `notebook_ran`): they run beside it.
READS = {
    "tests/test_tracking_notebook.py": "mlflow_tracking.ipynb",
    "tests/test_model_serving.py": "mlflow_tracking.ipynb",
    "tests/test_ui.py": "mlflow_tracking.ipynb",
    "tests/test_diffusion_notebook.py": "diffusion.ipynb",
    "tests/test_diffusion_serving.py": "diffusion.ipynb",
}
# The groups that take longest (see --durations), started first when workers run side by side.
LONGEST_FIRST = [
    "tests/test_ray_tune.py", "tests/test_grade.py", "tests/test_sweep_check.py", "diffusion.ipynb",
    "mlflow_tracking.ipynb", "tests/test_sandbox.py", "tests/test_ray_cluster.py",
]  # fmt: skip


def group_of(nodeid: str) -> str:
    """The group a test runs in: the notebook whose run it reads, else its notebook or module."""
    file = nodeid.split("::")[0]
    return READS.get(file, file)


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist hands out whole groups (its loadscope scheduling, with the groups above as scopes)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return ByGroup(config, log)


def pytest_collection_modifyitems(items):
    """Notebooks that nbval runs whole, and tests that read what a notebook logged (the notebook_ran
    fixture runs it when nbval has not), are in the slow tier. The longest groups come first."""
    for item in items:
        if item.path.suffix == ".ipynb" or "notebook_ran" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)

    def order(item) -> int:
        group = group_of(item.nodeid)
        return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=order)  # stable: the order within a group stays
