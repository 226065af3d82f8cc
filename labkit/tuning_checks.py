"""The self-checks of the tuning notebook's TODOs, one function per TODO: `import labkit.tuning_checks
as check`, then `check.search_space(...)`. Each runs what a TODO wrote, through public Ray Tune and MLflow
APIs only, and raises an AssertionError that says what is wrong, or prints what is right."""

import contextlib
import copy
import tempfile
from unittest import mock

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Categorical, Float, LogUniform, Uniform

CHECK_CONFIG = {"lr": 0.01, "weight_decay": 1e-4, "hidden_size": 32, "dropout": 0.3}  # for the trainable
RANGES = {
    "lr": (1e-4, 1e-1, LogUniform),
    "weight_decay": (1e-6, 1e-2, LogUniform),
    "dropout": (0.0, 0.5, Uniform),
}
HIDDEN_SIZES = [32, 64, 128, 256]


# --- TODO 1: the search space --------------------------------------------------------------------


def search_space(space) -> None:
    assert isinstance(space, dict), "SEARCH_SPACE should be a dict: run the TODO cell above"
    keys = sorted({*RANGES, "hidden_size"})
    assert sorted(space) == keys, f"SEARCH_SPACE's keys should be {keys}, not {sorted(space)}"
    for key, (lower, upper, sampler) in RANGES.items():
        domain = space[key]
        assert isinstance(domain, Float), f"{key} should be sampled from a continuous range, not {domain!r}"
        bounds = [domain.lower, domain.upper]
        assert np.isclose(bounds, [lower, upper]).all(), (
            f"{key} should range from {lower} to {upper}, not {bounds}"
        )
        how = "log-uniformly: it spans orders of magnitude" if sampler is LogUniform else "uniformly"
        assert isinstance(domain.get_sampler(), sampler), f"{key} should be sampled {how}"
    sizes = space["hidden_size"]
    assert isinstance(sizes, Categorical), f"hidden_size should be a choice among a few sizes, not {sizes!r}"
    assert sorted(sizes.categories) == HIDDEN_SIZES, (
        f"hidden_size: one of {HIDDEN_SIZES}, not {sizes.categories}"
    )
    print("OK: search space")


# --- TODO 2: the trainable -----------------------------------------------------------------------


@contextlib.contextmanager
def stand_in_tune(folder: str, checkpoint: tune.Checkpoint | None = None):
    """Run a trainable outside Tune: tune.report records what it is given (with a copy of each
    checkpoint, in folder), tune.get_checkpoint returns `checkpoint`. Yields the (metrics, checkpoint)s."""
    reports, folder = [], tempfile.mkdtemp(dir=folder)

    def report(metrics, *, checkpoint=None, **options):
        if checkpoint is not None:
            checkpoint = tune.Checkpoint.from_directory(checkpoint.to_directory(f"{folder}/{len(reports)}"))
        reports.append((dict(metrics), checkpoint))

    with (
        mock.patch.object(tune, "report", report),
        mock.patch.object(tune, "get_checkpoint", lambda: checkpoint),
    ):
        yield reports


def reports_outside_tune(train_digits, data: dict, every: int, folder: str, checkpoint=None) -> list:
    with stand_in_tune(folder, checkpoint) as reports:
        train_digits(dict(CHECK_CONFIG), data, checkpoint_every=every)
    return reports


def trainable(train_digits, data: dict, max_epochs: int, every: int = 2) -> None:
    """train_digits reports once per epoch, checkpoints every `every` epochs, and a trial continued from
    a checkpoint repeats the epochs after it exactly."""
    with tempfile.TemporaryDirectory(prefix="check-trainable-") as folder:
        reports = reports_outside_tune(train_digits, data, every, folder)
        assert reports, "train_digits never called tune.report: report once per epoch"
        n = len(reports)
        assert n == max_epochs, (
            f"train_digits reported {n} times in {max_epochs} epochs: report once per epoch"
        )
        metrics = reports[0][0]
        assert {"val_accuracy", "val_loss"} <= set(metrics), (
            f"report val_accuracy and val_loss: {sorted(metrics)}"
        )
        expected = [epoch for epoch in range(1, max_epochs + 1) if epoch % every == 0]
        checkpointed = [epoch for epoch, (_, checkpoint) in enumerate(reports, 1) if checkpoint is not None]
        assert checkpointed == expected, (
            f"with checkpoint_every={every}, the reports of epochs {expected} should carry a checkpoint, "
            f"not those of epochs {checkpointed}"
        )
        first = expected[0]
        try:
            resumed = reports_outside_tune(
                train_digits, data, every, folder, checkpoint=reports[first - 1][1]
            )
        except Exception as error:
            raise AssertionError(
                f"train_digits could not continue from its own checkpoint ({type(error).__name__}: {error}): "
                "the checkpoint should hold everything restore_checkpoint reads back"
            ) from error
    assert len(resumed) == max_epochs - first, (
        f"continued from the checkpoint of epoch {first}, train_digits should train epochs {first + 1} to "
        f"{max_epochs}, not {len(resumed)} epochs"
    )
    for epoch, ((again, _), (before, _)) in enumerate(zip(resumed, reports[first:], strict=True), first + 1):
        assert again["val_loss"] == before["val_loss"], (
            f"continued from the checkpoint of epoch {first}, epoch {epoch} gave val_loss "
            f"{again['val_loss']:.6f} instead of {before['val_loss']:.6f}: the checkpoint should hold "
            "everything the next epochs depend on (model, optimiser, epoch and random number generators)"
        )
    print(f"OK: one report per epoch, and continued from epoch {first} the trial repeats its epochs exactly")


# --- TODO 3: the sweep, logged to MLflow ---------------------------------------------------------


def sweep(results, strategy: str, experiment_id: str, max_epochs: int) -> None:
    """A sweep run by run_sweep (random search: every trial trains max_epochs) left a finished MLflow run
    per trial, nested under the sweep's parent run, with the trial's config and every epoch."""
    assert isinstance(results, tune.ResultGrid), (
        f"run_sweep should return what Tuner.fit returns: {results!r}"
    )
    assert not results.errors, f"a trial failed: {results.errors[0]!r}"
    try:
        results.get_best_result()
    except (ValueError, RuntimeError):
        raise AssertionError("TuneConfig should name the metric to optimise and its mode") from None
    client = MlflowClient()
    newest = {"order_by": ["attributes.start_time DESC"], "max_results": 1}
    [parent] = client.search_runs([experiment_id], f"attributes.run_name = '{strategy}'", **newest)
    assert parent.data.metrics.get("epochs"), "RunConfig's callbacks should include run_sweep's `callbacks`"
    for result in results:
        runs = client.search_runs(
            [experiment_id], f"attributes.run_name LIKE '%{result.metrics['trial_id']}'"
        )
        assert runs, "a trial has no MLflow run: give the Tuner the MLflow callback (RunConfig's callbacks)"
        [run] = runs
        assert run.data.tags.get("mlflow.parentRunId") == parent.info.run_id, (
            "the trials' MLflow runs are not nested under the sweep's parent run: tag them mlflow.parentRunId"
        )
        assert {"lr", "hidden_size"} <= set(run.data.params), "the trials' config should be logged as params"
        logged = len(client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert logged == max_epochs, f"a trial's run holds {logged} values of val_accuracy, not one per epoch"
        assert run.info.status == "FINISHED", f"a trial's run should be FINISHED, not {run.info.status}"
    print(f"OK: {len(results)} trials, each logged to a run nested under the sweep's, with config and epochs")


# --- TODO 4: ASHA --------------------------------------------------------------------------------


class StandInTrial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def stopping_epochs(scheduler, max_epochs: int, trials: int = 12) -> list:
    """Feed a copy of `scheduler` trials one after another, scored in a mixed order; return the epoch
    at which it stopped each (None: never)."""
    scheduler = copy.deepcopy(scheduler)
    assert scheduler.set_search_properties("val_accuracy", "max"), (
        "leave metric and mode out of the scheduler: it takes them from TuneConfig"
    )
    stopped = []
    for k in range(trials):
        trial, score = StandInTrial(f"trial_{k}"), 0.8 + (7 * k % trials) / 100
        scheduler.on_trial_add(None, trial)
        stopped.append(None)
        for epoch in range(1, max_epochs + 1):
            result = {"training_iteration": epoch, "val_accuracy": score + epoch / 1000}
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                stopped[-1] = epoch
                break
    return stopped


def asha(scheduler, grace_epochs: int, max_epochs: int) -> None:
    assert isinstance(scheduler, ASHAScheduler), f"ASHA should be an ASHAScheduler, not {scheduler!r}"
    got = stopping_epochs(scheduler, max_epochs)
    early = min((epoch for epoch in got if epoch is not None), default=None)
    assert early is None or early >= grace_epochs, (
        f"ASHA stopped a trial after {early} epoch(s): it should judge trials after {grace_epochs} epochs "
        "at the earliest (the grace period)"
    )
    assert got[0] == max_epochs, (
        f"a trial that is never stopped should train {max_epochs} epochs (max_t), not {got[0] or 'more'}"
    )
    reference = ASHAScheduler(max_t=max_epochs, grace_period=grace_epochs, reduction_factor=3)
    expected = stopping_epochs(reference, max_epochs)
    assert got == expected, (
        f"ASHA stopped a series of trials after {got} epochs, not {expected}: at each rung it should keep "
        "the best third of the trials (reduction_factor)"
    )
    print(f"OK: ASHA, with made-up trials, stopped them after {got} epochs")


# --- TODO 5: a searcher with a concurrency limit -------------------------------------------------


def first_suggestions(search_alg, space: dict, count: int) -> list:
    search_alg = copy.deepcopy(search_alg)
    search_alg.set_search_properties("val_accuracy", "max", space)
    return [search_alg.suggest(f"trial_{k}") for k in range(count)]


def searcher(tpe, space: dict, seed: int, max_concurrent: int = 2) -> None:
    assert isinstance(tpe, ConcurrencyLimiter), (
        f"TPE should be a searcher wrapped in a ConcurrencyLimiter, not {type(tpe).__name__}: TPE learns "
        "from finished trials, so only a few may run at a time"
    )
    assert isinstance(tpe.searcher, OptunaSearch), (
        f"the limited searcher should be Optuna's: {tpe.searcher!r}"
    )
    suggestions = first_suggestions(tpe, space, max_concurrent + 1)
    assert suggestions[-1] is None and None not in suggestions[:-1], (
        f"at most {max_concurrent} trials should run at a time, not {tpe.max_concurrent}"
    )
    reference = ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=max_concurrent)
    assert suggestions[0] == first_suggestions(reference, space, 1)[0], (
        f"seed Optuna's searcher with SEED ({seed}), so that the sweep can be repeated"
    )
    print(f"OK: Optuna's TPE, seeded, {max_concurrent} trials at a time")


# --- TODO 6: picking the best trial --------------------------------------------------------------


def stand_in_result(name: str, val_accuracy: list) -> tune.Result:
    epochs = range(1, len(val_accuracy) + 1)
    history = pd.DataFrame({"val_accuracy": val_accuracy, "training_iteration": epochs})
    metrics = {"val_accuracy": val_accuracy[-1], "trial_id": name}
    return tune.Result(metrics=metrics, checkpoint=None, error=None, path=name, metrics_dataframe=history)


def steadiness(result: tune.Result) -> float:
    return result.metrics_dataframe["val_accuracy"].tail(5).mean()


def pick_best(function, result_grids: list) -> None:
    lucky = stand_in_result("lucky last epoch", [0.90, 0.91, 0.92, 0.93, 0.94, 0.99])
    spiky = stand_in_result("one great epoch", [0.50, 0.995, 0.60, 0.60, 0.60, 0.60])
    steady = stand_in_result("steady", [0.94, 0.95, 0.955, 0.96, 0.96, 0.96])
    try:
        picked = function([[lucky], [spiky, steady]])
    except (AttributeError, TypeError) as error:
        raise AssertionError(
            f"pick_best should take any lists of tune.Result and read their metrics_dataframe ({error})"
        ) from None
    assert picked is not lucky, "pick_best chose the trial with the best last epoch, a lucky one"
    assert picked is not spiky, "pick_best chose the trial with the best single epoch, a lucky one"
    assert picked is steady, f"pick_best should choose the steadiest trial, not {picked!r}"
    trials = [trial for results in result_grids for trial in results]
    best = function(result_grids)
    assert np.isclose(steadiness(best), max(map(steadiness, trials))), "another trial averaged more"
    print(f"OK: pick_best chose the steadiest of {len(trials)} trials")
