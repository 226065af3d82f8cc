"""A Ray Tune callback that logs each trial to its own MLflow run from the driver, in a few batched
requests per trial sent by a background thread, so that Tune never waits for the tracking server.

Per trial: one request creates the run (nested under a parent run) when the trial starts; reports
wait in memory and go out with the trial's parameters in one `log_batch` request at each checkpoint,
at the trial's end and when the oldest waiting report is `flush_every_s` old; one request ends the
run: FINISHED, KILLED when a scheduler stopped the trial before `max_iterations` reports (or the
sweep was interrupted), FAILED on an error. After `Tuner.restore` it finds the runs of the sweep's
earlier trials by their `ray_trial_id` tag, and skips steps a run holds already. Hyperparameters a
scheduler changes mid-trial (PBT) can be logged as `hp/<name>` metrics at every step.
"""

import numbers
import time
from concurrent.futures import ThreadPoolExecutor

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS


class MLflowTrialLogger(tune.Callback):
    """Log each trial to its own MLflow run, nested under `parent_run_id` (see the module's docstring)."""

    def __init__(
        self, tracking_uri: str, experiment_id: str, parent_run_id: str, *, tags: dict | None = None,
        hp_metrics: tuple = (), flush_every_s: float = 10.0, max_iterations: int | None = None,
    ):  # fmt: skip
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.tags = {**(tags or {}), "mlflow.parentRunId": parent_run_id}
        self.hp_metrics, self.flush_every_s, self.max_iterations = hp_metrics, flush_every_s, max_iterations
        self.run_ids = {}  # trial id -> MLflow run id
        self.next_step = {}  # trial id -> the first step its run does not hold yet
        self.open_trials = set()  # trials whose run this logger has (re)opened and not ended
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
            self.send(self.create_run, trial_id, str(trial), {**self.tags, "ray_trial_id": trial_id})
            self.next_step[trial_id] = 0
            self.pending_params[trial_id] = [Param(key, str(value)) for key, value in trial.config.items()]
        elif trial_id not in self.open_trials:  # resumed after an interruption
            self.send(self.set_status, trial_id, "RUNNING")
        self.open_trials.add(trial_id)
        self.pending_metrics.setdefault(trial_id, [])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = result["training_iteration"] - 1  # one report per epoch: the epoch
        if step < self.next_step[trial.trial_id]:
            return  # repeated after a restart; the run holds this step already
        self.next_step[trial.trial_id] = step + 1
        values = {key: value for key, value in result.items() if is_metric(key, value)}
        values |= {f"hp/{key}": trial.config[key] for key in self.hp_metrics}
        now = int(time.time() * 1000)
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
        self.end(trial.trial_id, "KILLED" if stopped_early else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.end(trial.trial_id, "FAILED")

    def end(self, trial_id: str, status: str) -> None:
        self.flush(trial_id)
        self.send(self.set_status, trial_id, status)
        self.open_trials.discard(trial_id)

    def on_experiment_end(self, trials, **info):
        for trial_id in list(self.open_trials):  # the sweep was interrupted: resuming reopens them
            self.end(trial_id, "KILLED")
        self.requests.shutdown(wait=True)  # until the server has everything
        for request in self.sent:
            request.result()  # raises the error of a request that failed


def is_metric(key: str, value) -> bool:
    """Is this entry of a Tune result a number the trainable reported (not Tune's bookkeeping)?"""
    return key not in AUTO_RESULT_KEYS and isinstance(value, numbers.Real) and not isinstance(value, bool)
