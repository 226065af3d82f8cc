"""A tracking-server outage during a sweep: the sweep goes on, and once the server is back, nothing
that the trials reported meanwhile is lost.

The MLflow client retries failed requests with a growing back-off (about four minutes in all). The
strategies' logger, BatchedMLflowLoggerCallback, sends its requests from a background thread, so Tune
carries on while they wait for the server. The test drives the logger as Tune would, with stand-in
trials, and kills the server (SIGKILL: a crash) while they report, then starts it again on the same
port and data.
"""

import os
import signal
import time

import pytest
from mlflow import MlflowClient

from labkit.trial_logger import BatchedMLflowLoggerCallback
from tests.runs import metric_steps
from tests.tune_stand_ins import StandInTrial, result
from tools import mlflow_server

EPOCHS = 4


@pytest.mark.slow
def test_reports_sent_while_the_server_is_down_reach_it_once_it_is_back(tmp_path, capsys, monkeypatch):
    # The client's back-off doubles from 2 s (2, 4, 8, 16, 32 s, ...): from 1 s instead, it tries again
    # soon after the server is back, rather than up to half a minute later.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")
    with mlflow_server.temporary_server(tmp_path / "mlflow") as server:
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("outage")
        parent = client.create_run(experiment_id, run_name="sweep").info.run_id
        logger = BatchedMLflowLoggerCallback(
            server.url, experiment_name="outage", tags={"mlflow.parentRunId": parent}, flush_every_s=0
        )
        logger.setup()
        trials = [StandInTrial(f"t{k}", lr=0.01 * (k + 1)) for k in range(2)]
        for trial in trials:
            logger.on_trial_start(0, trials, trial)

        def report(epoch):
            for trial in trials:
                trial.last_result = result(epoch, val_accuracy=0.5 + epoch / 10)
                logger.on_trial_result(0, trials, trial, trial.last_result)

        report(0)
        os.killpg(server.process.pid, signal.SIGKILL)  # the server crashes
        server.process.wait()
        down_at = time.monotonic()
        for epoch in range(1, EPOCHS):
            report(epoch)  # returns at once: the requests wait in the background
        assert time.monotonic() - down_at < 2, "Tune would have waited for the server"
        port = int(server.url.rsplit(":", 1)[1])
        restarted = mlflow_server.start(port, server.log_path.parent, server.log_path)
        try:
            mlflow_server.wait_until_healthy(server.url, restarted, server.log_path)
            outage = time.monotonic() - down_at
            for trial in trials:
                logger.on_trial_complete(0, trials, trial)
            logger.on_experiment_end(trials)  # waits until the server has everything
            runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
            assert len(runs) == len(trials) and all(run.info.status == "FINISHED" for run in runs)
            for run in runs:
                steps = metric_steps(client, run.info.run_id, "val_accuracy")
                assert steps == list(range(1, EPOCHS + 1)), f"{run.info.run_name} holds steps {steps}"
        finally:
            mlflow_server.stop(restarted)
    with capsys.disabled():
        print(f"\n[outage] the tracking server was down for {outage:.1f} s while the trials reported")
