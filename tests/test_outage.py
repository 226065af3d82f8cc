"""A tracking-server outage of a few seconds during a sweep: the sweep finishes, nothing is lost.

The MLflow client retries failed requests with a growing back-off (about four minutes in all), so
trials that log while the server restarts wait for it and carry on.
"""

import contextlib
import os
import signal
import threading
import time

from mlflow import MlflowClient

from tests.runs import metric_steps
from tools import REPO, mlflow_server
from tools.notebooks import execute_notebook

MAX_EPOCHS = 3  # the notebook's smoke mode, which this test runs


def crash_and_restart_when_trials_log(server: mlflow_server.Server, restarted, outage: dict, give_up):
    """Kill the server (SIGKILL: a crash) as soon as grid-search trials log, then start it again on
    the same port and data; the restarted server is stopped when the `restarted` ExitStack closes."""
    client = MlflowClient(server.url)
    while not give_up.wait(0.2):
        experiment = client.get_experiment_by_name("ray-tune-lab")
        if experiment and client.search_runs([experiment.experiment_id], "tags.strategy = 'grid'"):
            break
    else:
        return
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    down_at = time.monotonic()
    port = int(server.url.rsplit(":", 1)[1])
    process = mlflow_server.start(port, server.log_path.parent, server.log_path)
    restarted.callback(mlflow_server.stop, process)
    mlflow_server.wait_until_healthy(server.url, process, server.log_path)
    outage["seconds"] = time.monotonic() - down_at


def test_sweep_survives_a_server_restart(tmp_path, monkeypatch, capsys):
    outage, notebook_done = {}, threading.Event()
    with mlflow_server.temporary_server(tmp_path / "mlflow") as server, contextlib.ExitStack() as restarted:
        restarter = threading.Thread(
            target=crash_and_restart_when_trials_log, args=(server, restarted, outage, notebook_done)
        )
        restarter.start()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("SMOKE_TEST", "1")
        try:
            execute_notebook(REPO / "ray_tune_solution.ipynb")
        finally:
            notebook_done.set()
            restarter.join(timeout=120)
        assert "seconds" in outage, "the server was not restarted during the sweep"
        with capsys.disabled():
            print(f"\n[outage] the tracking server was down for {outage['seconds']:.1f} s during the sweep")
        assert_grid_trials_complete(MlflowClient(server.url))


def assert_grid_trials_complete(client):
    experiment = client.get_experiment_by_name("ray-tune-lab")
    [grid] = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'grid'")
    trials = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{grid.info.run_id}'")
    assert trials and all(t.info.status == "FINISHED" for t in trials)
    for trial in trials:
        for key in ("val_accuracy", "val_loss"):
            steps = metric_steps(client, trial.info.run_id, key)
            assert steps == list(range(MAX_EPOCHS)), f"{trial.info.run_name} logged {key} at steps {steps}"
