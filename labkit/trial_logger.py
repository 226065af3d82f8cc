"""A Ray Tune callback that logs each trial to its own MLflow run from the driver, in a few batched
requests per trial sent by a background thread, so that Tune never waits for the tracking server.

Per trial: one request creates the run (nested under a parent run) when the trial starts; reports
wait in memory and go out with the trial's parameters (its config as it starts, or with
`params_on_trial_end` as it ends) in one `log_batch` request at each checkpoint, at the trial's end
and when the oldest waiting report is `flush_every_s` old; one request ends the
run: FINISHED, KILLED when a scheduler stopped the trial before `max_iterations` reports (or the
sweep was interrupted), FAILED on an error. After `Tuner.restore` it finds the runs of the sweep's
earlier trials by their `ray_trial_id` tag, and skips the steps a trial repeats after a restart from a
checkpoint (the run holds them already). A trial whose config changed (PBT's exploit: another trial's
weights and perturbed hyperparameters) trains new epochs even where its steps go back: each of them is
logged, after those of the same steps before. Hyperparameters a scheduler changes mid-trial can be
logged as `hp/<name>` metrics at every step.

`BatchedMLflowLoggerCallback` is the same logger behind the arguments of Ray's `MLflowLoggerCallback`,
so that a notebook swaps one for the other by changing a class name. `LoggerClock` times any logger:
how long Tune's loop waits for it. `kept_result_files()` are Tune's own per-trial result files, kept
whole when PBT restarts a trial.
"""

import numbers
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS


class MLflowTrialLogger(tune.Callback):
    """Log each trial to its own MLflow run, nested under `parent_run_id` (see the module's docstring)."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, *, tags: dict | None = None,
        hp_metrics: tuple = (), flush_every_s: float = 10.0, max_iterations: int | None = None,
        params_on_trial_end: bool = False,
    ):  # fmt: skip
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.tags = {**(tags or {}), "mlflow.parentRunId": parent_run_id}
        self.hp_metrics, self.flush_every_s, self.max_iterations = hp_metrics, flush_every_s, max_iterations
        self.params_on_trial_end = params_on_trial_end  # the config as the trial ends (PBT changes it)
        self.run_ids = {}  # trial id -> MLflow run id
        self.next_step = {}  # trial id -> the first step its run does not hold yet
        self.logged_config = {}  # trial id -> the config its latest logged step was trained with
        self.last_timestamp = {}  # trial id -> the time (ms) of its latest logged report
        self.open_trials = {}  # trial id -> trial, for runs this logger has (re)opened and not ended
        self.pending_metrics, self.pending_params = {}, {}  # trial id -> what the next flush sends

    def setup(self, **info):
        """Tune calls this when a sweep starts or resumes: find the runs of trials from before."""
        self.client = MlflowClient(self.tracking_uri)
        self.requests, self.sent = ThreadPoolExecutor(max_workers=1), []  # one request at a time, in order
        children = f"tags.mlflow.parentRunId = '{self.parent_run_id}'"
        for run in self.client.search_runs([self.experiment_id], children):
            if "ray_trial_id" in run.data.tags:
                self.run_ids[run.data.tags["ray_trial_id"]] = run.info.run_id
                self.next_step[run.data.tags["ray_trial_id"]] = self.steps_logged(run)

    def steps_logged(self, run) -> int:
        any_metric = next(iter(run.data.metrics), None)  # every report logs all of them at one step
        history = self.client.get_metric_history(run.info.run_id, any_metric) if any_metric else []
        return 1 + max((metric.step for metric in history), default=-1)

    def send(self, request, *args) -> None:
        """Queue `request(*args)` for the background thread and go on."""
        self.sent.append(self.requests.submit(request, *args))

    # The requests. They run in the background thread, each after the ones sent before it.
    def create_run(self, trial_id: str, run_name: str, tags: dict) -> None:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_ids[trial_id] = run.info.run_id

    def log_batch(self, trial_id: str, metrics: list, params: list) -> None:
        self.client.log_batch(self.run_ids[trial_id], metrics=metrics, params=params)

    def set_status(self, trial_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(self.run_ids[trial_id], status=status)
        else:
            self.client.set_terminated(self.run_ids[trial_id], status)  # also records the end time

    # What Tune calls, in its own thread.
    def on_trial_start(self, iteration, trials, trial, **info):
        trial_id = trial.trial_id
        if trial_id not in self.next_step:  # a new trial
            self.send(self.create_run, trial_id, str(trial), self.run_tags(trial))
            self.next_step[trial_id] = 0
            if not self.params_on_trial_end:
                self.pending_params[trial_id] = params(trial.config)
        elif trial_id not in self.open_trials:  # resumed after an interruption
            self.send(self.set_status, trial_id, "RUNNING")
        self.open_trials[trial_id] = trial
        self.pending_metrics.setdefault(trial_id, [])

    def run_tags(self, trial) -> dict:
        return {**self.tags, "ray_trial_id": trial.trial_id}

    def step(self, result: dict) -> int:
        return result["training_iteration"] - 1  # one report per epoch: the epoch, from 0

    def metrics(self, trial, result: dict) -> dict:
        """What to log of one report: the trainable's numbers and the hyperparameters in hp_metrics."""
        values = {key: value for key, value in result.items() if is_metric(key, value)}
        return values | {f"hp/{key}": trained_with(trial, result)[key] for key in self.hp_metrics}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step, config = self.step(result), trained_with(trial, result)
        if self.logged_config.setdefault(trial.trial_id, config) != config:
            self.logged_config[trial.trial_id] = config  # exploited (PBT): new epochs, whatever their steps
        elif step < self.next_step[trial.trial_id]:
            return  # repeated after a restart from a checkpoint; the run holds this step already
        self.next_step[trial.trial_id] = step + 1
        values = self.metrics(trial, result)
        # Each report later than the one before: in time order, a run's history is the order its trial
        # trained its epochs, even where PBT made the steps go back.
        now = max(int(time.time() * 1000), self.last_timestamp.get(trial.trial_id, 0) + 1)
        self.last_timestamp[trial.trial_id] = now
        pending = self.pending_metrics[trial.trial_id]
        pending += [Metric(key, float(value), now, step) for key, value in values.items()]
        if now - pending[0].timestamp >= 1000 * self.flush_every_s:
            self.flush(trial.trial_id)

    def flush(self, trial_id: str) -> None:
        metrics, params = self.pending_metrics[trial_id], self.pending_params.pop(trial_id, [])
        if metrics or params:
            self.send(self.log_batch, trial_id, metrics, params)
        self.pending_metrics[trial_id] = []

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self.flush(trial.trial_id)  # the run always reaches the trial's last checkpoint

    def on_trial_complete(self, iteration, trials, trial, **info):
        reports = trial.last_result.get("training_iteration", 0)
        stopped_early = self.max_iterations is not None and reports < self.max_iterations
        self.end(trial, "KILLED" if stopped_early else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.end(trial, "FAILED")

    def end(self, trial, status: str, interrupted: bool = False) -> None:
        if self.params_on_trial_end and not interrupted:
            self.pending_params[trial.trial_id] = params(trial.config)
        self.flush(trial.trial_id)
        self.send(self.set_status, trial.trial_id, status)
        del self.open_trials[trial.trial_id]

    def on_experiment_end(self, trials, **info):
        for trial in list(self.open_trials.values()):  # the sweep was interrupted: resuming reopens them
            self.end(trial, "KILLED", interrupted=True)
        self.requests.shutdown(wait=True)  # until the server has everything
        for request in self.sent:
            request.result()  # raises the error of a request that failed


class BatchedMLflowLoggerCallback(MLflowTrialLogger):
    """`MLflowTrialLogger` with the arguments and the record of Ray's `MLflowLoggerCallback`: a run per
    trial named after it in `experiment_name`, `tags` on every run (they must name the parent run:
    `{"mlflow.parentRunId": ...}`), the config as params (when the trial ends with
    `log_params_on_trial_end=True`), and at step `training_iteration` the reported numbers and the
    config's numbers as `config/<name>`. Unlike Ray's, it leaves out Tune's bookkeeping (times, pid,
    ...), sends a few requests per trial from a background thread, and after `Tuner.restore` goes on
    with each trial's run instead of opening a second one."""

    def __init__(
        self, tracking_uri: str, *, experiment_name: str, tags: dict, log_params_on_trial_end: bool = False,
        flush_every_s: float = 10.0,
    ):  # fmt: skip
        tags = dict(tags)
        parent_run_id = tags.pop("mlflow.parentRunId", None)
        if parent_run_id is None:
            raise ValueError("give the parent run's id as tags={'mlflow.parentRunId': ...}")
        super().__init__(
            tracking_uri, None, parent_run_id, tags=tags, flush_every_s=flush_every_s,
            params_on_trial_end=log_params_on_trial_end,
        )  # fmt: skip
        self.experiment_name = experiment_name

    def setup(self, **info):
        client = MlflowClient(self.tracking_uri)
        name = self.experiment_name
        experiment = client.get_experiment_by_name(name)
        self.experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        super().setup(**info)

    def run_tags(self, trial) -> dict:
        return super().run_tags(trial) | {"trial_name": str(trial)}  # as Ray's callback tags its runs

    def step(self, result: dict) -> int:
        return result["training_iteration"]  # Ray's callback's step

    def metrics(self, trial, result: dict) -> dict:
        config = trained_with(trial, result)
        config = {f"config/{key}": value for key, value in config.items() if is_metric(key, value)}
        return super().metrics(trial, result) | config


class LoggerClock:
    """Makes loggers as `logger_class` does (`LoggerClock(MLflowLoggerCallback)(uri, ...)`), each timed:
    `seconds` adds up the time Tune's loop spends in their callbacks, time in which it takes no trial's
    report. `__name__` is the class's."""

    def __init__(self, logger_class):
        self.logger_class, self.__name__, self.seconds = logger_class, logger_class.__name__, 0.0

    def __call__(self, *args, **kwargs) -> "TimedLogger":
        return TimedLogger(self.logger_class(*args, **kwargs), self)


class TimedLogger(tune.Callback):
    """A Tune callback that passes every call on to `logger` and adds its duration to `clock.seconds`."""

    IS_CALLBACK_CONTAINER = True  # Tune checks that every hook is passed on

    def __init__(self, logger: tune.Callback, clock: LoggerClock):
        self.logger, self.clock = logger, clock

    def timed(self, hook: str, **info):
        start = time.perf_counter()
        try:
            return getattr(self.logger, hook)(**info)
        finally:
            self.clock.seconds += time.perf_counter() - start

    def setup(self, **info):
        return self.timed("setup", **info)

    def on_step_begin(self, **info):
        return self.timed("on_step_begin", **info)

    def on_step_end(self, **info):
        return self.timed("on_step_end", **info)

    def on_trial_start(self, **info):
        return self.timed("on_trial_start", **info)

    def on_trial_restore(self, **info):
        return self.timed("on_trial_restore", **info)

    def on_trial_save(self, **info):
        return self.timed("on_trial_save", **info)

    def on_trial_result(self, **info):
        return self.timed("on_trial_result", **info)

    def on_trial_complete(self, **info):
        return self.timed("on_trial_complete", **info)

    def on_trial_recover(self, **info):
        return self.timed("on_trial_recover", **info)

    def on_trial_error(self, **info):
        return self.timed("on_trial_error", **info)

    def on_checkpoint(self, **info):
        return self.timed("on_checkpoint", **info)

    def on_experiment_end(self, **info):
        return self.timed("on_experiment_end", **info)

    def get_state(self):
        return self.logger.get_state()

    def set_state(self, state: dict):
        self.logger.set_state(state)


class KeepLocalFile:
    """Tune's JSON and CSV loggers write each trial's reports to a file in the driver's staging folder,
    copied to the sweep's storage every ten seconds or so. When a trial starts again from a checkpoint,
    they first copy the storage's file back over the local one, for a sweep resumed elsewhere; on the
    machine that wrote it (PBT restarts its trials every few epochs), that copy is older than the local
    file (its newest reports are lost) or not there yet (Tune warns "Remote file not found"). Mixed into
    those loggers: keep the local file when there is one."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not Path(trial.local_path, file_name).exists():
            super()._restore_from_remote(file_name, trial)


class JsonFileLogger(KeepLocalFile, JsonLoggerCallback):
    pass


class CsvFileLogger(KeepLocalFile, CSVLoggerCallback):
    pass


def kept_result_files() -> list[tune.Callback]:
    """Tune's result-file loggers (JSON, CSV), keeping a trial's file whole when it restarts from a
    checkpoint in the same sweep: give them to the Tuner's callbacks, and Tune adds none of its own."""
    return [JsonFileLogger(), CsvFileLogger()]


def trained_with(trial, result: dict) -> dict:
    """The config a report was trained with. Tune puts it in the report; the trial's own config may be
    newer already (PBT's exploit changes it before the loggers see the report that decided it)."""
    return dict(result.get("config", trial.config))


def params(config: dict) -> list[Param]:
    return [Param(key, str(value)) for key, value in config.items()]


def is_metric(key: str, value) -> bool:
    """Is this entry of a Tune result a number the trainable reported (not Tune's bookkeeping)?"""
    return key not in AUTO_RESULT_KEYS and isinstance(value, numbers.Real) and not isinstance(value, bool)
