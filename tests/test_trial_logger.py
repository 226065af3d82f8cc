"""The lab's trial loggers (labkit/trial_logger.py), driven directly with stand-in trials as Tune would
drive them: what they log, in how many requests, how they carry on after an interrupted sweep and after
PBT's exploits; and the lab's other Tune callbacks (a clock for loggers, Tune's result files kept whole).
`MLflowTrialLogger` is the logger; `BatchedMLflowLoggerCallback`, what the tuning notebook's strategies
use, is the same behind the arguments and the record of Ray's `MLflowLoggerCallback`."""

import time
import uuid

import pytest
from mlflow.exceptions import MlflowException
from ray import tune

from labkit.trial_logger import BatchedMLflowLoggerCallback, LoggerClock, MLflowTrialLogger, kept_result_files
from tests.tune_stand_ins import CountingClient, StandInTrial, result


@pytest.fixture(scope="module")
def trial_logger():
    return MLflowTrialLogger


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


def start_batched(client, sweep, **options) -> BatchedMLflowLoggerCallback:
    experiment_id, parent_run_id = sweep
    name = client.get_experiment(experiment_id).name
    tags = {"mlflow.parentRunId": parent_run_id, **options.pop("tags", {})}
    logger = BatchedMLflowLoggerCallback(client.tracking_uri, experiment_name=name, tags=tags, **options)
    logger.setup()
    return logger


def test_the_batched_callback_leaves_the_record_of_rays_callback(client, sweep):
    logger = start_batched(client, sweep, tags={"strategy": "pbt"}, log_params_on_trial_end=True)
    trial = StandInTrial("p1", lr=0.01, hidden_size=32, activation="relu")
    logger.on_trial_start(0, [], trial)
    for epoch in range(4):
        if epoch == 2:
            trial.config = {**trial.config, "lr": 0.02}  # PBT mutated it
        logger.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.5 + epoch / 10))
    logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end([trial])

    [run] = trial_runs(client, sweep)
    assert run.info.run_name == "trainable_p1" and run.info.status == "FINISHED"
    tags = {"trial_name": "trainable_p1", "strategy": "pbt", "ray_trial_id": "p1"}
    assert tags.items() <= run.data.tags.items()
    final_config = {"lr": "0.02", "hidden_size": "32", "activation": "relu"}
    assert run.data.params == final_config, "params: the config the trial ended with"
    assert set(run.data.metrics) == {"val_accuracy", "config/lr", "config/hidden_size"}, "no Tune bookkeeping"
    steps = [step for step, _ in history(client, run)]
    assert steps == [1, 2, 3, 4], "steps are training_iteration, as in Ray's callback"
    assert [value for _, value in history(client, run, "config/lr")] == [0.01, 0.01, 0.02, 0.02]


def test_the_batched_callback_resumes_a_trials_run_with_its_steps(client, sweep):
    trial = StandInTrial("r1", lr=0.01)
    first = start_batched(client, sweep)
    first.on_trial_start(0, [], trial)
    for epoch in range(3):
        first.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.1 * (epoch + 1)))
    first.on_experiment_end([trial])  # interrupted
    resumed = start_batched(client, sweep)
    resumed.on_trial_start(0, [], trial)
    for epoch in range(1, 4):  # from a checkpoint after the first epoch
        resumed.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.9))
    resumed.on_trial_complete(0, [], trial)
    resumed.on_experiment_end([trial])
    [run] = trial_runs(client, sweep)
    assert history(client, run) == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3)), (4, 0.9)]
    assert run.data.params == {"lr": "0.01"} and run.info.status == "FINISHED"


def test_the_batched_callback_needs_the_parent_run(client):
    with pytest.raises(ValueError, match="mlflow.parentRunId"):
        BatchedMLflowLoggerCallback(client.tracking_uri, experiment_name="x", tags={"strategy": "grid"})


def test_an_exploited_trial_logs_every_epoch_it_trains_with_its_new_config(client, sweep):
    """PBT's exploit, as Tune shows it to the loggers: the report of epoch 4 (trained with lr 0.01) decides
    it, and Tune already gives the trial its new config (lr 0.02) as the loggers see that report; the
    trial then trains epochs 3 and 4 again from another's checkpoint of epoch 2. Those are new epochs,
    not repeats: each reaches the run, after the first ones, with the config each was trained with."""
    logger = start_batched(client, sweep, log_params_on_trial_end=True)
    trial = StandInTrial("x1", lr=0.01)
    logger.on_trial_start(0, [], trial)
    for epoch in range(4):
        if epoch == 3:
            trial.config = {"lr": 0.02}  # exploited while Tune processed this report
        report = result(epoch, val_accuracy=0.5 + epoch / 10, config={"lr": 0.01})
        logger.on_trial_result(0, [], trial, report)
    for epoch in range(2, 5):
        logger.on_trial_result(0, [], trial, result(epoch, val_accuracy=0.95, config={"lr": 0.02}))
    logger.on_trial_complete(0, [], trial)
    logger.on_experiment_end([trial])

    [run] = trial_runs(client, sweep)
    by_time = {"key": lambda m: (m.timestamp, m.step)}
    accuracy = sorted(client.get_metric_history(run.info.run_id, "val_accuracy"), **by_time)
    assert [(m.step, m.value) for m in accuracy] == [
        (1, 0.5), (2, 0.6), (3, 0.7), (4, pytest.approx(0.8)), (3, 0.95), (4, 0.95), (5, 0.95)
    ]  # fmt: skip
    lr = sorted(client.get_metric_history(run.info.run_id, "config/lr"), **by_time)
    assert [m.value for m in lr] == [0.01] * 4 + [0.02] * 3, "each epoch with the lr it was trained with"
    assert run.data.params == {"lr": "0.02"}


def test_the_logger_clock_adds_up_the_time_tune_spends_in_the_logger():
    class SlowLogger(tune.Callback):
        def __init__(self, name, *, pause):
            self.name, self.pause, self.results = name, pause, 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            time.sleep(self.pause)
            self.results += 1

    clock = LoggerClock(SlowLogger)
    loggers = [clock("a", pause=0.02), clock("b", pause=0.03)]
    for logger in loggers:
        logger.on_trial_result(iteration=0, trials=[], trial=None, result={})
    assert clock.__name__ == "SlowLogger"
    assert [logger.logger.results for logger in loggers] == [1, 1], "each call reaches the logger"
    assert 0.05 <= clock.seconds < 1


def test_the_kept_result_files_are_not_copied_back_over_a_local_file(tmp_path):
    """A trial restarting from a checkpoint on the machine that wrote its result file keeps that file;
    only where there is none (a sweep resumed elsewhere) does Tune's logger fetch it from storage."""

    class Trial:
        local_path, checkpoint = str(tmp_path), "a checkpoint"

        @property
        def storage(self):
            raise AssertionError("the logger went to the sweep's storage")

    for logger in kept_result_files():
        (tmp_path / "result.json").write_text("{}\n")
        (tmp_path / "progress.csv").write_text("a\n")
        logger._restore_from_remote("result.json", Trial())
        logger._restore_from_remote("progress.csv", Trial())
        with pytest.raises(AssertionError, match="storage"):
            logger._restore_from_remote("missing.json", Trial())
