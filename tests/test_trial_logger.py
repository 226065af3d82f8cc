"""The lab's `MLflowTrialLogger` (labkit/trial_logger.py), driven directly with stand-in trials as Tune
would drive it: what it logs, in how many requests, and how it carries on after an interrupted sweep."""

import time
import uuid
from collections import Counter

import pytest
from mlflow.exceptions import MlflowException

from labkit.trial_logger import MLflowTrialLogger
from tools import REPO
from tools.notebooks import load_definitions

SOLUTION = REPO / "ray_tune_solution.ipynb"


@pytest.fixture(scope="module")
def trial_logger():
    return MLflowTrialLogger


class StandInTrial:
    """What the logger uses of a Tune trial: its id, config, name and last result."""

    def __init__(self, trial_id: str, **config):
        self.trial_id, self.config, self.last_result = trial_id, config, {}

    def __str__(self):
        return f"trainable_{self.trial_id}"


class CountingClient:
    """Passes calls on to an MlflowClient and counts them: the logger's requests to the server."""

    def __init__(self, client):
        self.client, self.calls = client, Counter()

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def result(epoch: int, **metrics) -> dict:
    """A Tune result as callbacks see it: the trainable's metrics among Tune's bookkeeping."""
    return {
        **metrics, "training_iteration": epoch + 1, "time_this_iter_s": 0.01, "time_total_s": 0.1,
        "timestamp": 1_800_000_000, "done": False, "trial_id": "t", "date": "2026-11-27_10-00-00",
    }  # fmt: skip


@pytest.fixture
def sweep(client):
    """A fresh experiment and the parent run of one strategy in it."""
    experiment_id = client.create_experiment(f"trial-logger-{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment_id, run_name="strategy")
    return experiment_id, parent.info.run_id


def start_logger(trial_logger, client, sweep, **options):
    """A logger as Tune sets one up when a sweep starts (or resumes), with its requests counted."""
    logger = trial_logger(client.tracking_uri, *sweep, **options)
    logger.setup()
    logger.client = CountingClient(logger.client)
    return logger


def trial_runs(client, sweep) -> list:
    experiment_id, parent_run_id = sweep
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")


def history(client, run, key="val_accuracy") -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def test_a_short_trial_costs_three_requests_and_is_logged_completely(trial_logger, client, sweep):
    logger = start_logger(trial_logger, client, sweep, tags={"strategy": "grid"}, hp_metrics=("lr",))
    trial = StandInTrial("a1", lr=0.01, hidden_size=32)
    logger.on_trial_start(0, [], trial)
    for epoch in range(5):
        logger.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.5 + epoch / 10))
    logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end([trial])  # waits until the server has everything

    assert logger.client.calls == {"create_run": 1, "log_batch": 1, "set_terminated": 1}
    [run] = trial_runs(client, sweep)
    assert run.info.status == "FINISHED" and run.info.run_name == "trainable_a1"
    assert run.data.params == {"lr": "0.01", "hidden_size": "32"}
    expected_tags = {"strategy": "grid", "ray_trial_id": "a1", "mlflow.parentRunId": sweep[1]}
    assert expected_tags.items() <= run.data.tags.items()
    assert set(run.data.metrics) == {"val_accuracy", "hp/lr"}, "Tune's bookkeeping should not be logged"
    assert history(client, run) == [(epoch, pytest.approx(0.5 + epoch / 10)) for epoch in range(5)]


def test_a_trial_a_scheduler_stops_early_ends_killed(trial_logger, client, sweep):
    logger = start_logger(trial_logger, client, sweep, max_iterations=5)
    stopped, finished = StandInTrial("e1", lr=0.01), StandInTrial("e2", lr=0.1)
    for trial, reports in ((stopped, 2), (finished, 5)):
        logger.on_trial_start(0, [], trial)
        for epoch in range(reports):
            trial.last_result = result(epoch, val_accuracy=0.5)
            logger.on_trial_result(0, [], trial, trial.last_result)
        logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end([stopped, finished])
    status = {run.info.run_name: run.info.status for run in trial_runs(client, sweep)}
    assert status == {"trainable_e1": "KILLED", "trainable_e2": "FINISHED"}


def test_a_long_trial_shows_its_progress_before_it_ends(trial_logger, client, sweep):
    logger = start_logger(trial_logger, client, sweep, flush_every_s=0)
    trial = StandInTrial("b1", lr=0.01)
    logger.on_trial_start(0, [], trial)
    for epoch in range(3):
        logger.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.9))
    deadline = time.monotonic() + 10  # the requests go out in the background
    while not (runs := trial_runs(client, sweep)) or len(history(client, runs[0])) < 3:
        assert time.monotonic() < deadline, "the trial's reports did not reach the server within 10 s"
        time.sleep(0.1)
    assert [step for step, _ in history(client, runs[0])] == [0, 1, 2]
    assert runs[0].info.status == "RUNNING"
    logger.on_experiment_end([trial])


def test_a_resumed_sweep_continues_each_trials_run_without_gaps_or_doubles(trial_logger, client, sweep):
    trial = StandInTrial("c1", lr=0.01)
    first = start_logger(trial_logger, client, sweep)
    first.on_trial_start(0, [], trial)
    for epoch in range(4):
        first.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.1 * (epoch + 1)))
        if epoch == 1:
            first.on_checkpoint(0, [], trial, checkpoint=None)
    first.on_experiment_end([trial])  # Ctrl-C after epoch 3: the trial has not ended
    [interrupted] = trial_runs(client, sweep)
    assert interrupted.info.status == "KILLED"
    assert len(history(client, interrupted)) == 4, "an interrupted trial's reports should not be lost"

    # Tuner.restore sets up a fresh copy of the logger; the trial goes on from its checkpoint (epoch 1),
    # so it reports epochs 2 and 3 again, with other values, before epoch 4.
    resumed = start_logger(trial_logger, client, sweep)
    resumed.on_trial_start(0, [], trial)
    for epoch in range(2, 5):
        resumed.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.9))
    resumed.on_trial_complete(0, [], trial)
    resumed.on_experiment_end([trial])

    [run] = trial_runs(client, sweep)
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    expected = [(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4), (4, 0.9)]
    assert history(client, run) == [(step, pytest.approx(value)) for step, value in expected]
    assert resumed.client.calls == {"update_run": 1, "log_batch": 1, "set_terminated": 1}


def test_a_failed_request_does_not_stop_the_sweep_but_is_raised_at_its_end(trial_logger, client, sweep):
    logger = start_logger(trial_logger, client, sweep)
    client.delete_experiment(sweep[0])  # the server refuses new runs in a deleted experiment
    trial = StandInTrial("d1", lr=0.01)
    logger.on_trial_start(0, [], trial)
    logger.on_trial_result(0, [], trial, result(0, val_accuracy=0.9))
    logger.on_trial_complete(0, [], trial)
    with pytest.raises(MlflowException, match="active"):
        logger.on_experiment_end([trial])


def test_load_definitions_finds_only_what_the_notebook_defines():
    found = load_definitions(SOLUTION, "trivial_trainable", "train_digits")
    assert found["train_digits"].__module__ == "ray_tune_solution"
    with pytest.raises(LookupError, match="no_such_function"):
        load_definitions(SOLUTION, "no_such_function")
