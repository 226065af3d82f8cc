"""The self-checks of the tuning notebook's TODOs, one function per TODO: `import labkit.tuning_checks
as check`, then `check.search_space(SEARCH_SPACE)`.

Each check is two halves. Here it observes: it runs what the TODO wrote on stand-in inputs, through
public Ray Tune, Optuna and MLflow APIs, and notes what happened as plain data (numbers, strings, lists).
labkit/tuning_judges.py judges that data against the notebook's facts: an AssertionError that says what
is wrong, or a line that says what is right. When the grader runs a check (LAB_OBSERVATIONS set), the
observations also go to a file, and the grader judges them in its own process with the same judge
(tools/grading/judging.py): the self-check at home and the grade say the same. Where a budget changes
what an answer does, the check observes it under both budgets (MAX_EPOCHS, TRIALS) by setting them in
the notebook for the length of the check. No check holds an answer, and nothing is kept from one check
to the next.
"""

import contextlib
import inspect
import json
import numbers
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import mlflow
import numpy as np
import optuna
import pandas as pd
import ray.train._internal.session as train_session
import ray.tune.trainable.trainable_fn_utils as tune_session
from mlflow import MlflowClient
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Domain

from labkit import tuning_judges as judges
from labkit.tracking import DEFAULT_URI

OBSERVATIONS = "LAB_OBSERVATIONS"  # set by the grader: the folder its observations go to


def plain(value):
    """value as JSON holds it: None, a bool, a number or a string stays, anything else becomes its repr."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return repr(value)[:200]


def described(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:300]}"


def judged(name: str, observed: dict, server: dict | None = None) -> None:
    """Hand the observations to the grader, when it runs this check, then judge them: raise what the
    judge finds wrong, or print what is right."""
    folder = os.environ.get(OBSERVATIONS)
    if folder:
        Path(folder, f"{name}.json").write_text(json.dumps(observed))
    print(judges.JUDGES[name](observed, server))


@contextlib.contextmanager
def budget(function, **values):
    """The notebook's budget (MAX_EPOCHS, TRIALS) set to `values` for the student's function, as long as
    the block lasts."""
    namespace = getattr(function, "__globals__", {})
    before = {name: namespace[name] for name in values if name in namespace}
    namespace.update(values)
    try:
        yield
    finally:
        for name in values:
            namespace.pop(name, None)
        namespace.update(before)


# --- TODO 1: the search space --------------------------------------------------------------------


def observed_domain(domain) -> dict:
    seen = {
        "grid": isinstance(domain, dict) and "grid_search" in domain,
        "domain": isinstance(domain, Domain),
        "repr": repr(domain)[:100],
    }
    if seen["domain"]:
        try:
            samples = domain.sample(size=judges.DRAWS, random_state=np.random.default_rng(0))
            seen["samples"] = [plain(value) for value in samples]
        except Exception as error:  # noqa: BLE001 (the judge says what went wrong)
            seen["raised"] = described(error)
    return seen


def search_space(space) -> None:
    """SEARCH_SPACE samples each hyperparameter over its range on the scale its effect goes by."""
    observed = {"type": "dict" if isinstance(space, dict) else type(space).__name__}
    if isinstance(space, dict):
        observed["keys"] = [key if isinstance(key, str) else repr(key) for key in space]
        observed["domains"] = {
            key: observed_domain(domain) for key, domain in space.items() if isinstance(key, str)
        }
        try:
            OptunaSearch.convert_search_space(space)
            observed["optuna_refused"] = None
        except Exception as error:  # noqa: BLE001
            observed["optuna_refused"] = described(error)
    judged("search_space", observed)


# --- TODO 2: the trainable -----------------------------------------------------------------------

CHECK_CONFIG = {"lr": 0.01, "weight_decay": 1e-4, "hidden_size": 32, "dropout": 0.3}


class StandInSession:
    """What tune.report and tune.get_checkpoint talk to inside a trial, for a trainable run outside Tune:
    it records each report (with a copy of its checkpoint, in folder) and hands out `checkpoint`."""

    def __init__(self, folder: str, checkpoint: tune.Checkpoint | None = None):
        self.folder, self.loaded_checkpoint, self.reports = folder, checkpoint, []

    def report(self, metrics: dict, checkpoint: tune.Checkpoint | None = None, **options) -> None:
        if checkpoint is not None:
            copy = checkpoint.to_directory(f"{self.folder}/{len(self.reports)}")
            checkpoint = tune.Checkpoint.from_directory(copy)
        self.reports.append((dict(metrics), checkpoint))


def run_outside_tune(train_digits, data: dict, every: int, folder: str, checkpoint=None) -> tuple[dict, list]:
    """Run the trainable with a stand-in session (however it calls tune.report); returns what it did, as
    data, and the checkpoints it reported (None where a report had none)."""
    session = StandInSession(tempfile.mkdtemp(dir=folder), checkpoint)
    run = {"raised": None}
    with (  # the session tune.report and tune.get_checkpoint find, however the trainable names them
        mock.patch.object(train_session, "get_session", lambda: session),
        mock.patch.object(tune_session, "get_session", lambda: session),
    ):
        try:
            train_digits(dict(CHECK_CONFIG), data, checkpoint_every=every)
        except Exception as error:  # noqa: BLE001
            run["raised"] = described(error)
    run["reports"] = [
        {"metrics": plain(metrics), "checkpoint": checkpoint is not None}
        for metrics, checkpoint in session.reports
    ]
    return run, [checkpoint for _, checkpoint in session.reports]


def trainable(train_digits, data: dict) -> None:
    """train_digits reports once per epoch, checkpoints every `checkpoint_every` epochs (never when it is
    0), and a trial continued from a checkpoint repeats the epochs after it exactly."""
    every = judges.TRAINABLE_EVERY
    with tempfile.TemporaryDirectory(prefix="check-trainable-") as folder:
        with budget(train_digits, MAX_EPOCHS=judges.TRAINABLE_EPOCHS):
            never, _ = run_outside_tune(train_digits, data, 0, folder)
            regular, checkpoints = run_outside_tune(train_digits, data, every, folder)
            first = checkpoints[every - 1] if len(checkpoints) >= every else None
            resumed, _ = run_outside_tune(train_digits, data, every, folder, first) if first else (None, None)
    runs = {
        "never": never,
        "every": regular,
        "resumed": resumed or {"raised": "no checkpoint", "reports": []},
    }
    judged("trainable", {"runs": runs})


# --- TODO 3: the sweep, logged to MLflow ---------------------------------------------------------


class SweepWatcher(tune.Callback):
    """The check's own callback: which resources each trial reserved, how many results it saw, and after
    which epochs each trial handed Tune a checkpoint."""

    def __init__(self):
        self.starts, self.results, self.checkpoints = [], 0, {}

    def on_trial_start(self, iteration, trials, trial, **info):
        resources = trial.placement_group_factory.required_resources
        self.starts.append({"trial_id": trial.trial_id, "resources": plain(resources)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.results += 1

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        epoch = trial.last_result.get("training_iteration")
        self.checkpoints.setdefault(trial.trial_id, []).append(epoch)


class CountingScheduler(FIFOScheduler):
    """Tune's default scheduler, counting the results it sees: proof that it reached TuneConfig."""

    results = 0

    def on_trial_result(self, tune_controller, trial, result):
        self.results += 1
        return super().on_trial_result(tune_controller, trial, result)


class SweepStopped(Exception):
    """The self-check's logger was made with arguments that would log elsewhere: the check's sweep stops
    before it runs (the judge says what is wrong with them)."""


def recording_logger(made: list, tracking_uri: str) -> type:
    """A logger class that logs as Ray's MLflowLoggerCallback does, and notes the arguments each logger it
    makes is given; one whose arguments would log elsewhere stops the sweep, which need not run then."""
    signature = inspect.signature(MLflowLoggerCallback.__init__)

    class SelfCheckLogger(MLflowLoggerCallback):
        def __init__(self, *args, **kwargs):
            arguments = signature.bind(self, *args, **kwargs).arguments
            made.append({key: plain(value) for key, value in arguments.items() if key != "self"})
            if judges.logger_arguments(made[-1], tracking_uri):
                raise SweepStopped("the self-check's logger was given arguments that log elsewhere")
            super().__init__(*args, **kwargs)

    return SelfCheckLogger


def tracking_uri() -> str:
    """The MLflow server the notebook logs to, as labkit.tracking.connect finds it."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def observed_results(results) -> dict:
    observed = {"returned": type(results).__name__, "is_result_grid": isinstance(results, tune.ResultGrid)}
    if not observed["is_result_grid"]:
        return observed
    observed["errors"] = [described(error) for error in results.errors]
    observed["experiment_path"] = str(results.experiment_path)
    observed["trials"] = [
        {
            "trial_id": result.metrics.get("trial_id"),
            "path": result.path,
            "config": plain(result.config or {}),
            "last_val_accuracy": plain(result.metrics.get("val_accuracy")),
        }
        for result in results
    ]
    try:
        observed["best"] = {"path": results.get_best_result().path}
    except (ValueError, RuntimeError) as error:
        observed["best"] = {"raised": described(error)}
    return observed


def sweep(run_sweep: Callable) -> None:
    """run_sweep, given a search space, a logger class, callbacks, checkpoint_every and tune_options of the
    check's own, runs a sweep that uses each of them, optimises val_accuracy upwards, keeps its state under
    STORAGE_PATH, and leaves a finished MLflow run per trial, nested under the sweep's parent run, with the
    trial's config and every epoch."""
    notebook, nonce = getattr(run_sweep, "__globals__", {}), secrets.token_hex(4)
    observed = {
        "strategy": f"self-check-3-{nonce}",
        "nonce": nonce,
        "storage_path": str(notebook.get("STORAGE_PATH")),
        "tracking_uri": plain(notebook.get("TRACKING_URI")),
        "tracking_uri_before": mlflow.get_tracking_uri(),
    }
    watcher, scheduler, loggers = SweepWatcher(), CountingScheduler(), []
    space = {"lr": tune.loguniform(3e-3, 3e-2), "weight_decay": 1e-5, "hidden_size": 16, "dropout": 0.1}
    default_store, results = Path("mlflow.db"), None
    existed = default_store.exists()
    try:
        with budget(run_sweep, MAX_EPOCHS=judges.SWEEP_EPOCHS):
            results = run_sweep(
                observed["strategy"], {**space, "self_check": nonce},
                log_with=recording_logger(loggers, observed["tracking_uri"]),
                callbacks=[watcher], checkpoint_every=judges.SWEEP_EVERY, num_samples=judges.SWEEP_TRIALS,
                search_alg=BasicVariantGenerator(random_state=0), scheduler=scheduler,
            )  # fmt: skip
        observed["raised"] = None
    except Exception as error:  # noqa: BLE001
        observed["raised"] = described(error)
    finally:
        observed["tracking_uri_after"] = mlflow.get_tracking_uri()
        if observed["tracking_uri_after"] != observed["tracking_uri_before"]:  # undo what a logger did
            mlflow.set_tracking_uri(observed["tracking_uri_before"])
            if not existed:
                default_store.unlink(missing_ok=True)
    observed.update(observed_results(results), loggers=loggers, scheduler_results=scheduler.results)
    observed["callback"] = {
        "starts": watcher.starts,
        "results": watcher.results,
        "checkpoints": watcher.checkpoints,
    }
    judged("sweep", observed, sweep_server_facts(tracking_uri(), observed))


def sweep_server_facts(uri: str, observed: dict) -> dict:
    """What the MLflow server at uri holds of the check's sweep: its parent run, the runs nested under it
    (status, params, how many values of val_accuracy), and how many runs of its trials are not nested.
    It reads no more than a right sweep would leave, give or take (the server is the student's)."""
    client, facts = MlflowClient(uri), {"parent": None, "children": [], "unnested": 0}
    experiment = client.get_experiment_by_name(judges.EXPERIMENT)
    strategy = str(observed.get("strategy"))
    if experiment is None or not re.fullmatch(r"self-check-3-[0-9a-f]{8}", strategy):
        return facts

    def runs(where: str) -> list:
        return client.search_runs([experiment.experiment_id], where, max_results=4 * judges.SWEEP_TRIALS)

    [parent] = runs(f"attributes.run_name = '{strategy}'")[:1] or [None]
    if parent is None:
        return facts
    facts["parent"] = {"run_id": parent.info.run_id, "status": parent.info.status}
    for child in runs(f"tags.mlflow.parentRunId = '{parent.info.run_id}'"):
        steps = client.get_metric_history(child.info.run_id, "val_accuracy")
        facts["children"].append({
            "status": child.info.status, "params": dict(child.data.params), "val_accuracy_steps": len(steps),
        })  # fmt: skip
    trial_ids = [str(trial.get("trial_id")) for trial in observed.get("trials", [])][: judges.SWEEP_TRIALS]
    for trial_id in filter(re.compile(r"\w+").fullmatch, trial_ids):
        for run in runs(f"attributes.run_name LIKE '%{trial_id}'"):
            facts["unnested"] += run.data.tags.get("mlflow.parentRunId") != parent.info.run_id
    return facts


SERVER_FACTS = {"sweep": sweep_server_facts}


# --- TODO 4: ASHA --------------------------------------------------------------------------------


class StandInTrial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def stopping_epochs(scheduler, trials: list, max_epochs: int) -> list[int | None]:
    """Feed the scheduler the trials one after another, as Tune would; the epoch at which it stopped
    each (None: not within twice max_epochs)."""
    stopped = []
    for k, (base, slope) in enumerate(trials):
        trial, stop = StandInTrial(f"trial_{k}"), None
        scheduler.on_trial_add(None, trial)
        for epoch in range(1, 2 * max_epochs + 1):
            result = {"training_iteration": epoch, "val_accuracy": base + slope * epoch}
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                stop = epoch
                break
        scheduler.on_trial_complete(None, trial, result)
        stopped.append(stop)
    return stopped


def asha(make_asha: Callable) -> None:
    """make_asha() builds a fresh scheduler that stops trials as ASHA with the notebook's rungs does, and
    no later than MAX_EPOCHS, under either budget."""
    observed = {"callable": callable(make_asha), "budgets": {}}
    for name, values in judges.BUDGETS.items() if callable(make_asha) else ():
        seen = observed["budgets"][name] = {}
        try:
            with budget(make_asha, **values):
                scheduler = make_asha()
                seen.update(type=type(scheduler).__name__, is_asha=isinstance(scheduler, ASHAScheduler))
                seen["fresh"] = make_asha() is not scheduler
                seen["properties_accepted"] = bool(scheduler.set_search_properties("val_accuracy", "max"))
                seen["stops"] = stopping_epochs(scheduler, judges.stand_in_trials(), values["MAX_EPOCHS"])
        except Exception as error:  # noqa: BLE001
            seen["raised"] = described(error)
    judged("asha", observed)


# --- TODO 5: TPE, a searcher that learns -----------------------------------------------------------

STAND_IN_SPACE = {"lr": tune.loguniform(1e-5, 1.0), "units": tune.choice([8, 16, 32])}


@contextlib.contextmanager
def quiet_optuna():
    """Optuna announces each study it creates; the check creates a few."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def classes_of(search) -> dict:
    """The search algorithm inside any wrappers (ConcurrencyLimiter, ...), and the Optuna sampler it uses."""
    inner = search
    while isinstance(getattr(inner, "searcher", None), Searcher):
        inner = inner.searcher
    study = getattr(inner, "_ot_study", None)  # OptunaSearch's study, once it knows its space
    sampler = study.sampler if study is not None else getattr(inner, "_sampler", None)
    return {"searcher": type(inner).__name__, "sampler": type(sampler).__name__}


def suggestions(make_tpe: Callable, objective: Callable, count: int) -> tuple[list, int | None]:
    """Run a sweep of `count` trials through a fresh searcher as Tune would: ask for configurations
    while it gives them, and when it gives none, finish the oldest running trial with its made-up
    score. Returns the configurations, and how many trials ran at once when it first gave none."""
    searcher = make_tpe()
    searcher.set_search_properties("val_accuracy", "max", STAND_IN_SPACE)
    running, configs, limit = [], [], None
    while len(configs) < count:
        config = searcher.suggest(f"trial_{len(configs)}")
        if config is None:
            limit = len(running) if limit is None else limit
            if not running:
                raise RuntimeError("it gives no configuration while no trial runs")
            trial_id, finished = running.pop(0)
            searcher.on_trial_complete(
                trial_id, {"val_accuracy": objective(finished["lr"]), "training_iteration": 1}
            )
            continue
        running.append((f"trial_{len(configs)}", config))
        configs.append(plain(config))
    return configs, limit


def searcher(make_tpe: Callable) -> None:
    """make_tpe() builds a fresh, seeded TPE searcher that runs two trials at a time and, within a budget
    of TRIALS, chooses at least a third of them from what finished trials scored, moving towards the
    configurations that scored best, under either budget."""
    observed = {"callable": callable(make_tpe), "budgets": {}}
    for name, values in judges.BUDGETS.items() if callable(make_tpe) else ():
        seen, trials = observed["budgets"].setdefault(name, {}), values["TRIALS"]
        try:
            with budget(make_tpe, **values), quiet_optuna():
                first = make_tpe()
                seen["fresh"] = make_tpe() is not first
                seen["accepted"] = bool(first.set_search_properties("val_accuracy", "max", STAND_IN_SPACE))
                seen["classes"] = classes_of(first)
                if seen["classes"] != judges.NAMED_SEARCHER:
                    continue  # the judge says so first: no sweep of made-up trials needed
                seen["first"], seen["limit"] = suggestions(make_tpe, judges.rising, trials)
                seen["again"], _ = suggestions(make_tpe, judges.rising, trials)
                seen["up"], _ = suggestions(make_tpe, judges.rising, trials + judges.EXTRA)
                seen["down"], _ = suggestions(make_tpe, judges.falling, trials + judges.EXTRA)
        except Exception as error:  # noqa: BLE001
            seen["raised"] = described(error)
    judged("searcher", observed)


# --- TODO 6: a steady score ------------------------------------------------------------------------


def steady(steady_accuracy: Callable) -> None:
    """steady_accuracy scores a trial by the end of its training, every epoch trained at a low learning rate
    alike: not by earlier epochs, and not by any one lucky epoch, under either budget."""
    observed = {"callable": callable(steady_accuracy), "budgets": {}}
    for name, values in judges.BUDGETS.items() if callable(steady_accuracy) else ():
        seen = observed["budgets"][name] = {"scores": {}, "raised": {}}
        with budget(steady_accuracy, **values):
            for curve, accuracies in judges.stand_in_curves(values["MAX_EPOCHS"]).items():
                try:
                    seen["scores"][curve] = plain(float(steady_accuracy(pd.Series(accuracies))))
                except Exception as error:  # noqa: BLE001
                    seen["raised"][curve] = described(error)
    judged("steady", observed)


JUDGES = judges.JUDGES  # the grader's protocol (tools/grading/judging.py): the judging halves, by check
