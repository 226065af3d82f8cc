"""The self-checks of the tuning notebook's TODOs, one function per TODO: `import labkit.tuning_checks
as check`, then `check.search_space(...)`. Each runs what a TODO wrote on stand-in inputs, through public
Ray Tune, Optuna and MLflow APIs, and tests what it does: it raises an AssertionError that says what is
wrong, or prints what is right. No check holds an answer: each tests properties that every right answer
has, the facts it needs (ranges, rungs, budgets) come from the notebook, and nothing is kept from one
check to the next."""

import contextlib
import math
import numbers
import tempfile
from collections.abc import Callable
from unittest import mock

import numpy as np
import optuna
import pandas as pd
from mlflow import MlflowClient
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.sample import Domain

# --- TODO 1: the search space --------------------------------------------------------------------

# The facts the notebook states about each hyperparameter: its range, and how its effect goes.
BY_RATIO, BY_STEP = "by ratio", "by step"  # 0.001 -> 0.002 as much as 0.01 -> 0.02; 0.1 -> 0.2 as 0.3 -> 0.4
FACTS = {
    "lr": (1e-4, 1e-1, BY_RATIO),
    "weight_decay": (1e-6, 1e-2, BY_RATIO),
    "dropout": (0.0, 0.5, BY_STEP),
}
WIDTHS = [32, 64, 128, 256]
DRAWS = 4000  # samples drawn from each domain


def draws(key: str, domain) -> np.ndarray:
    assert not (isinstance(domain, dict) and "grid_search" in domain), (
        f"{key} is a grid: random search and TPE draw configurations from distributions"
    )
    assert isinstance(domain, Domain), (
        f"{key} should be a Tune search domain that Tune samples from, not {domain!r}"
    )
    try:
        values = domain.sample(size=DRAWS, random_state=np.random.default_rng(0))
    except Exception as error:
        raise AssertionError(f"Tune could not sample {key} ({type(error).__name__}: {error})") from None
    wrong = [value for value in values if not isinstance(value, numbers.Real) or isinstance(value, bool)]
    assert not wrong, f"{key} should be a number, not {wrong[0]!r}"
    return np.asarray(values, dtype=float)


def spans(key: str, values: np.ndarray, lower: float, upper: float, scale: str) -> None:
    """The values lie in [lower, upper], reach both ends, and spread evenly on the scale the effect goes
    by: over orders of magnitude (by ratio), or over the range itself (by step)."""
    low, high = values.min(), values.max()
    assert lower * (1 - 1e-9) <= low and high <= upper * (1 + 1e-9), (
        f"{key} should lie between {lower:g} and {upper:g}: it was sampled from {low:.3g} to {high:.3g}"
    )
    if scale == BY_RATIO:
        assert len(np.unique(values)) > 10, (
            f"{key} takes only {len(np.unique(values))} values: good values lie anywhere in its range, so "
            "sample it from the whole range, not from a few points"
        )
        position = np.log(values / lower) / np.log(upper / lower)  # 0 at lower, 1 at upper
        parts, named = round(np.log10(upper / lower)), "decade"
    else:
        position, parts, named = (values - lower) / (upper - lower), 5, "fifth of its range"
    shares = np.histogram(position, bins=parts, range=(0, 1))[0] / len(position)
    assert abs(position.mean() - 0.5) < 0.06 and 0.1 < np.mean(position < 0.2) < 0.3, (
        f"{key}'s effect goes {scale}, so each {named} between {lower:g} and {upper:g} should get about the "
        f"same share of the samples ({1 / parts:.0%}); yours get {', '.join(f'{s:.0%}' for s in shares)}"
    )
    assert position.min() < 0.1 and position.max() > 0.9, f"{key} should reach both ends of its range"


def search_space(space) -> None:
    """SEARCH_SPACE samples each hyperparameter over its range on the scale its effect goes by."""
    assert isinstance(space, dict), "SEARCH_SPACE should be a dict: run the TODO cell above"
    keys = sorted({*FACTS, "hidden_size"})
    assert sorted(space) == keys, (
        f"SEARCH_SPACE's keys should be the hyperparameters the trainable uses, {keys}, not {sorted(space)}"
    )
    for key, (lower, upper, scale) in FACTS.items():
        spans(key, draws(key, space[key]), lower, upper, scale)
    widths = draws("hidden_size", space["hidden_size"])
    assert set(widths) == set(WIDTHS), (
        f"hidden_size should be one of {WIDTHS}, not {[int(width) for width in sorted(set(widths))[:8]]}"
    )
    shares = [float(np.mean(widths == width)) for width in WIDTHS]
    assert max(abs(s - 1 / len(WIDTHS)) for s in shares) < 0.04, (
        f"each width should be as likely as the others, not {', '.join(f'{s:.0%}' for s in shares)}"
    )
    try:
        OptunaSearch.convert_search_space(space)
    except Exception as error:
        raise AssertionError(
            f"Optuna's TPE (section 5) cannot search this space ({type(error).__name__}: {error}): use "
            "Tune's distributions"
        ) from None
    print("OK: each hyperparameter is sampled over its range, on the scale its effect goes by")


# --- TODO 2: the trainable -----------------------------------------------------------------------

CHECK_CONFIG = {"lr": 0.01, "weight_decay": 1e-4, "hidden_size": 32, "dropout": 0.3}


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
        try:
            train_digits(dict(CHECK_CONFIG), data, checkpoint_every=every)
        except NotImplementedError:
            raise
        except Exception as error:
            failed = f"{type(error).__name__}: {error}"
            if checkpoint is None:
                raise AssertionError(
                    f"train_digits(..., checkpoint_every={every}) raised {failed}"
                ) from error
            raise AssertionError(
                f"train_digits could not continue from its own checkpoint ({failed}): the checkpoint should "
                "hold everything restore_checkpoint reads back"
            ) from error
    return reports


def checkpointed_epochs(reports: list) -> list[int]:
    return [epoch for epoch, (_, checkpoint) in enumerate(reports, 1) if checkpoint is not None]


def trainable(train_digits, data: dict, max_epochs: int) -> None:
    """train_digits reports once per epoch, checkpoints every `checkpoint_every` epochs (never when it is
    0), and a trial continued from a checkpoint repeats the epochs after it exactly."""
    every = 3 if max_epochs >= 6 else 1
    with tempfile.TemporaryDirectory(prefix="check-trainable-") as folder:
        reports = reports_outside_tune(train_digits, data, 0, folder)
        assert len(reports) == max_epochs, (
            f"train_digits reported {len(reports)} times in {max_epochs} epochs: report once per epoch"
        )
        assert {"val_accuracy", "val_loss"} <= set(reports[0][0]), (
            f"report val_accuracy and val_loss, not {sorted(reports[0][0])}"
        )
        assert not checkpointed_epochs(reports), (
            f"with checkpoint_every=0, train_digits should never checkpoint; it did after epochs "
            f"{checkpointed_epochs(reports)}"
        )
        reports = reports_outside_tune(train_digits, data, every, folder)
        assert len(reports) == max_epochs, (
            f"with checkpoint_every={every}, train_digits reported {len(reports)} times in {max_epochs} "
            "epochs: report once per epoch, with or without a checkpoint"
        )
        expected = list(range(every, max_epochs + 1, every))
        assert checkpointed_epochs(reports) == expected, (
            f"with checkpoint_every={every}, the reports of epochs {expected} should carry a checkpoint, "
            f"not those of epochs {checkpointed_epochs(reports)}"
        )
        resumed = reports_outside_tune(train_digits, data, every, folder, checkpoint=reports[every - 1][1])
    assert len(resumed) == max_epochs - every, (
        f"continued from the checkpoint of epoch {every}, train_digits should train epochs {every + 1} to "
        f"{max_epochs}, not {len(resumed)} epochs"
    )
    for epoch, ((again, _), (before, _)) in enumerate(zip(resumed, reports[every:], strict=True), every + 1):
        assert again["val_loss"] == before["val_loss"], (
            f"continued from the checkpoint of epoch {every}, epoch {epoch} gave val_loss "
            f"{again['val_loss']:.6f} instead of {before['val_loss']:.6f}: the checkpoint should hold "
            "everything the next epochs depend on"
        )
    print(f"OK: one report per epoch, a checkpoint every {every} (none with 0), and continued from epoch "
          f"{every} the trial repeats its epochs exactly")  # fmt: skip


# --- TODO 3: the sweep, logged to MLflow ---------------------------------------------------------


def sweep(results, strategy: str, experiment_id: str, max_epochs: int, storage_path: str) -> None:
    """A sweep run by run_sweep (random search: every trial trains max_epochs) kept its state under
    storage_path, optimised val_accuracy upwards, and left a finished MLflow run per trial, nested under
    the sweep's parent run, with the trial's config and every epoch."""
    assert isinstance(results, tune.ResultGrid), (
        f"run_sweep should return what Tuner.fit returns, not {results!r}"
    )
    assert not results.errors, f"a trial failed: {results.errors[0]!r}"
    where = storage_path.split("://")[-1].rstrip("/")
    assert where in results.experiment_path, (
        f"Tune kept the sweep in {results.experiment_path}: RunConfig's storage_path should be {storage_path}"
    )
    try:
        best = results.get_best_result()
    except (ValueError, RuntimeError):
        raise AssertionError("TuneConfig should name the metric to optimise and its mode") from None
    last = {result.path: result.metrics["val_accuracy"] for result in results}
    assert last[best.path] == max(last.values()), (
        f"the Tuner's best trial ended with val_accuracy {last[best.path]:.4f}, another with "
        f"{max(last.values()):.4f}: does the Tuner optimise the validation accuracy the right way?"
    )
    client = MlflowClient()
    newest = {"order_by": ["attributes.start_time DESC"], "max_results": 1}
    [parent] = client.search_runs([experiment_id], f"attributes.run_name = '{strategy}'", **newest)
    reports = parent.data.metrics.get("epochs", 0)
    assert reports == len(results) * max_epochs, (
        f"run_sweep's epoch counter saw {reports:.0f} reports, not {len(results) * max_epochs}: RunConfig's "
        "callbacks should include run_sweep's `callbacks`"
    )
    for result in results:
        runs = client.search_runs(
            [experiment_id], f"attributes.run_name LIKE '%{result.metrics['trial_id']}'"
        )
        assert runs, "a trial has no MLflow run: give the Tuner the MLflow logger (RunConfig's callbacks)"
        [run] = runs
        assert run.data.tags.get("mlflow.parentRunId") == parent.info.run_id, (
            "the trials' MLflow runs are not nested under the sweep's parent run: tag them mlflow.parentRunId"
        )
        assert {"lr", "hidden_size"} <= set(run.data.params), "the trials' config should be logged as params"
        logged = len(client.get_metric_history(run.info.run_id, "val_accuracy"))
        assert logged == max_epochs, f"a trial's run holds {logged} values of val_accuracy, not one per epoch"
        assert run.info.status == "FINISHED", f"a trial's run should be FINISHED, not {run.info.status}"
    print(f"OK: {len(results)} trials, the most accurate one best, each in a run nested under the sweep's")


# --- TODO 4: ASHA --------------------------------------------------------------------------------


class StandInTrial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def stand_in_trials(count: int = 24) -> list[tuple[float, float]]:
    """Made-up trials: each scores base + slope * epoch, some rising, some falling."""
    rng = np.random.default_rng(0)
    return [(round(rng.uniform(0.5, 0.9), 3), round(rng.uniform(-0.01, 0.02), 4)) for _ in range(count)]


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


def halving(trials: list, rungs: list[int], max_epochs: int) -> list[dict]:
    """What asynchronous successive halving does with these rungs, derived from its rule: a trial that
    reaches a rung goes on only if its score is at least the (1 - 1/eta) quantile of the scores of the
    trials that reached the rung before it (eta: the ratio between rungs; the first always goes on).
    For each trial: the epoch it stops at, and at each rung it reached, (trials there before it, how many
    of them it beat)."""
    eta = rungs[1] / rungs[0]
    seen = {rung: [] for rung in rungs if rung < max_epochs}
    outcome = []
    for base, slope in trials:
        fate = {"stop": max_epochs, "rungs": {}}
        for rung, before in seen.items():
            score = base + slope * rung
            goes_on = not before or score >= np.percentile(before, 100 * (1 - 1 / eta))
            fate["rungs"][rung] = (len(before), sum(score > other for other in before))
            before.append(score)
            if not goes_on:
                fate["stop"] = rung
                break
        outcome.append(fate)
    return outcome


def asha(make_asha: Callable, rungs: list[int], max_epochs: int) -> None:
    """make_asha() builds a fresh scheduler that stops trials as ASHA with these rungs does, and no later
    than max_epochs."""
    assert callable(make_asha), "make_asha should be a function that returns a new scheduler"
    scheduler = make_asha()
    assert isinstance(scheduler, ASHAScheduler), (
        f"make_asha() should return an ASHAScheduler, not {scheduler!r}"
    )
    assert make_asha() is not scheduler, "make_asha() should build a new scheduler each time it is called"
    assert scheduler.set_search_properties("val_accuracy", "max"), (
        "leave metric and mode out of the scheduler: it takes them from TuneConfig"
    )
    trials = stand_in_trials()
    with failures_said("the scheduler, fed made-up trials,"):
        got = stopping_epochs(scheduler, trials, max_epochs)
    expected = halving(trials, rungs, max_epochs)
    judged = sorted(rung for rung in rungs if rung < max_epochs)
    early = [epoch for epoch in got if epoch is not None and epoch < judged[0]]
    assert not early, (
        f"ASHA stopped a trial after {min(early)} epoch(s): it should judge trials first after {judged[0]} "
        "epochs (its grace period)"
    )
    stops = sorted({epoch for epoch in got if epoch is not None and epoch != max_epochs})
    assert set(stops) <= set(judged), (
        f"ASHA stopped trials after {stops} epochs: its rungs should be at {judged} (below max_t = "
        f"{max_epochs}); a grace period r and a reduction factor eta put them at r, r*eta, r*eta^2, ..."
    )
    assert any(got), (
        f"ASHA stopped none of {len(trials)} made-up trials, however they scored: does it count epochs "
        "(training_iteration)?"
    )
    for epoch, fate in zip(got, expected, strict=True):
        if fate["stop"] == max_epochs and epoch != max_epochs:
            when = f"went on past {max_epochs} epochs" if epoch is None else f"was stopped at epoch {epoch}"
            raise AssertionError(
                f"a trial that passed every rung {when}: no trial should train more than MAX_EPOCHS = "
                f"{max_epochs} epochs, and none that passes every rung fewer (max_t)"
            )
    for epoch, fate in zip(got, expected, strict=True):
        if epoch != fate["stop"]:
            rung = min(epoch, fate["stop"])
            before, beaten = fate["rungs"][rung]
            did = "stopped it" if epoch < fate["stop"] else "let it go on"
            raise AssertionError(
                f"a trial reached the rung of epoch {rung} after {before} other{'s' * (before != 1)}, beat "
                f"{beaten} of them, and ASHA {did}. A trial should go on only while it is among the best "
                "1/eta of the trials that reached the rung, eta being the reduction factor (also the ratio "
                "between rungs)"
            )
    counts = {rung: sum(fate["stop"] == rung for fate in expected) for rung in judged}
    stopped = ", ".join(f"{n} at epoch {rung}" for rung, n in counts.items())
    print(f"OK: ASHA stopped {len(trials)} made-up trials as asynchronous halving does ({stopped}, the rest "
          f"at {max_epochs})")  # fmt: skip


# --- TODO 5: TPE, a searcher that learns -----------------------------------------------------------

EXTRA = 12  # suggestions past the budget, for the direction test


def rising(config: dict) -> float:
    """A made-up validation accuracy that grows with the learning rate, on a log scale."""
    return 0.90 + 0.03 * (math.log10(config["lr"]) + 4)


def falling(config: dict) -> float:
    return 0.99 - 0.03 * (math.log10(config["lr"]) + 4)


@contextlib.contextmanager
def failures_said(what: str):
    """An error in the student's object, raised as an AssertionError that says where it came from."""
    try:
        yield
    except (AssertionError, NotImplementedError):
        raise
    except Exception as error:
        raise AssertionError(f"{what} failed: {type(error).__name__}: {error}") from error


@contextlib.contextmanager
def quiet_optuna():
    """Optuna announces each study it creates; the check creates a few."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def suggestions(make_tpe: Callable, space: dict, objective: Callable, count: int) -> tuple[list, int | None]:
    """Run a sweep of `count` trials through a fresh searcher as Tune would: ask for configurations
    while it gives them, and when it gives none, finish the oldest running trial with its made-up
    score. Returns the configurations, and how many trials ran at once when it first gave none."""
    searcher = make_tpe()
    assert searcher.set_search_properties("val_accuracy", "max", space), (
        "leave the search space, metric and mode out of the searcher: it takes them from the Tuner"
    )
    running, configs, limit = [], [], None
    while len(configs) < count:
        config = searcher.suggest(f"trial_{len(configs)}")
        if config is None:
            limit = len(running) if limit is None else limit
            assert running, "the searcher gives no configuration while no trial runs"
            trial_id, finished = running.pop(0)
            searcher.on_trial_complete(
                trial_id, {"val_accuracy": objective(finished), "training_iteration": 1}
            )
            continue
        running.append((f"trial_{len(configs)}", config))
        configs.append(config)
    return configs, limit


def mean_log_lr(configs: list) -> float:
    return float(np.mean([math.log10(config["lr"]) for config in configs]))


def searcher(make_tpe: Callable, space: dict, trials: int, max_concurrent: int = 2) -> None:
    """make_tpe() builds a fresh, seeded searcher that runs max_concurrent trials at a time and, within
    a budget of `trials`, chooses at least a third of them from what finished trials scored, moving
    towards the configurations that scored best."""
    assert callable(make_tpe), "make_tpe should be a function that returns a new searcher"
    with quiet_optuna(), failures_said("the searcher, in a sweep of made-up trials,"):
        assert make_tpe() is not make_tpe(), "make_tpe() should build a new searcher each time it is called"
        first, limit = suggestions(make_tpe, space, rising, trials)
        assert limit is not None, (
            f"the searcher gave all {trials} configurations before any trial finished: TPE learns from "
            "finished trials, so limit how many run at once"
        )
        assert limit == max_concurrent, (
            f"{limit} trials ran at once: run {max_concurrent} at a time, one per core"
        )
        again, _ = suggestions(make_tpe, space, rising, trials)
        assert again == first, (
            "two searchers from make_tpe() suggested different configurations: seed the sampler, so that "
            "the sweep can be repeated (OptunaSearch passes its `seed` only to a sampler it makes itself)"
        )
        up, _ = suggestions(make_tpe, space, rising, trials + EXTRA)
        down, _ = suggestions(make_tpe, space, falling, trials + EXTRA)
    learned = next((k for k, (a, b) in enumerate(zip(up, down, strict=True)) if a != b), None)
    assert learned is not None, (
        "the searcher's suggestions do not depend on how the finished trials scored: it samples at random"
    )
    chosen, needed = trials - learned, math.ceil(trials / 3)
    assert chosen >= needed, (
        f"of the {trials} trials of the sweep, only {max(chosen, 0)} were chosen from the scores of finished "
        f"trials, not at least {needed}: until n_startup_trials trials have finished, TPE samples at random"
    )
    towards, away = mean_log_lr(up[-8:]), mean_log_lr(down[-8:])
    assert towards > away + 0.5, (
        "fed trials that scored best at a high learning rate, the searcher suggested learning rates around "
        f"{10**towards:.1g}; fed the opposite, around {10**away:.1g}: it should move towards the best "
        "scores (does it maximise val_accuracy?)"
    )
    print(f"OK: seeded, {max_concurrent} trials at a time, and {chosen} of {trials} trials chosen from the "
          f"scores of finished ones, towards the best (learning rates around {10**towards:.1g} vs "
          f"{10**away:.1g})")  # fmt: skip


# --- TODO 6: a steady score ------------------------------------------------------------------------


def final_quarter(max_epochs: int) -> int:
    """How many epochs the last quarter of training holds."""
    return max_epochs - math.floor(0.75 * max_epochs)


def learning_curve(max_epochs: int) -> pd.Series:
    """A made-up validation accuracy per epoch: rising, then flat with a little jitter."""
    epochs = np.arange(1, max_epochs + 1)
    jitter = 0.004 * np.sin(7.0 * epochs)
    return pd.Series(0.96 - 0.16 * np.exp(-4 * epochs / max_epochs) + jitter)


def score_of(steady_accuracy: Callable, curve: pd.Series, what: str) -> float:
    try:
        score = float(steady_accuracy(curve.copy()))
    except NotImplementedError:
        raise
    except Exception as error:
        raise AssertionError(
            f"steady_accuracy failed on {what} ({type(error).__name__}: {error}): it takes a pandas Series "
            "of validation accuracies, one per epoch in order, and returns a number"
        ) from None
    assert math.isfinite(score), (
        f"steady_accuracy gave {score} for {what}: every trial needs a score, from the epochs it has"
    )
    return score


def steady(steady_accuracy: Callable, max_epochs: int) -> None:
    """steady_accuracy scores a trial by the end of its training, all of the last quarter's epochs
    alike: not by earlier epochs, and not by any one lucky epoch."""
    assert callable(steady_accuracy), "steady_accuracy should be a function"
    curve, last = learning_curve(max_epochs), final_quarter(max_epochs)
    end = list(range(max_epochs - last, max_epochs))  # positions of the last quarter's epochs
    flat = pd.Series([0.95] * max_epochs)
    assert abs(score_of(steady_accuracy, flat, "a trial at 0.95 every epoch") - 0.95) < 1e-9, (
        "a trial whose validation accuracy is 0.95 at every epoch should score 0.95: score it on the "
        "accuracy scale"
    )
    base = score_of(steady_accuracy, curve, "a full trial")
    early = curve.copy()
    early.iloc[: max_epochs - last] = 0.5
    moved = score_of(steady_accuracy, early, "a trial with other early epochs") - base
    assert abs(moved) < 1e-9, (
        f"changing epochs 1 to {max_epochs - last} moved the score by {100 * moved:+.2f} points: score what "
        f"the trial's model is worth at the end of training (its last quarter, epochs {end[0] + 1} to "
        f"{max_epochs}, where the learning rate has almost decayed), not how it got there"
    )
    for position in reversed(end):  # the last epoch first
        lucky = curve.copy()
        lucky.iloc[position] += 0.05
        gain = score_of(steady_accuracy, lucky, "a trial with one lucky epoch") - base
        assert gain <= 0.05 / 2 + 1e-9, (
            f"one lucky epoch (epoch {position + 1}, 5 points up) raised the score by {100 * gain:.1f} "
            "points: one epoch should count for little"
        )
        assert gain > 1e-9, (
            f"epoch {position + 1} did not count: every epoch of the last quarter (epochs {end[0] + 1} to "
            f"{max_epochs}) measures the same model, and the more of them count alike, the less one "
            "lucky epoch moves the score"
        )
    better = curve.copy()
    better.iloc[end] += 0.01
    raised = score_of(steady_accuracy, better, "a trial one point better at the end") - base
    assert abs(raised - 0.01) < 1e-6, (
        f"a trial one point better in each of its last {last} epochs should score one point more, not "
        f"{100 * raised:.2f}: weigh those epochs alike"
    )
    score_of(steady_accuracy, curve.iloc[:2], "a trial ASHA stopped after 2 epochs")
    print(f"OK: steady_accuracy scores a trial by its last {last} epochs of {max_epochs}, alike")
