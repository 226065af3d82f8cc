"""The judging halves of the tuning notebook's self-checks: pure functions of what a check observed (plain
JSON data: numbers, strings, lists) and of the notebook's facts, each raising an AssertionError that says
what is wrong, in the student's terms, or returning what is right. labkit/tuning_checks.py observes (it
runs the student's code on stand-in inputs); the grader calls these in its own process on what the
kernel wrote, and reads MLflow itself, so a verdict never comes from the student's process.

No judge holds an answer: each tests properties that every right answer has. The facts (ranges, rungs,
budgets) are the notebook's; tests/test_ray_tune.py checks that the notebook states the same. Each
check that a budget changes judges the answer under both budgets, the smoke test's and the full one,
so that the self-check at home and the grade say the same whatever SMOKE_TEST was.
"""

import math

import numpy as np

# --- the notebook's facts -------------------------------------------------------------------------

EXPERIMENT = "ray-tune-lab"
BUDGETS = {"smoke": {"MAX_EPOCHS": 8, "TRIALS": 6}, "full": {"MAX_EPOCHS": 20, "TRIALS": 9}}
BY_RATIO, BY_STEP = "by ratio", "by step"  # 0.001 -> 0.002 as much as 0.01 -> 0.02; 0.1 -> 0.2 as 0.3 -> 0.4
FACTS = {
    "lr": (1e-4, 1e-1, BY_RATIO),
    "weight_decay": (1e-6, 1e-2, BY_RATIO),
    "dropout": (0.0, 0.5, BY_STEP),
}
WIDTHS = [32, 64, 128, 256]
ASHA_RUNGS = [2, 6, 18]
MAX_CONCURRENT = 2  # trials at a time in the TPE sweep: one per core
LOW_LEARNING_RATE = 0.15  # below this share of its start, the learning rate barely moves the model

# --- the stand-ins the checks feed the student's code ----------------------------------------------

DRAWS = 4000  # samples drawn from each search domain
TRAINABLE_EPOCHS, TRAINABLE_EVERY = 6, 3  # the trainable's check: MAX_EPOCHS, and checkpoint_every
SWEEP_TRIALS, SWEEP_EPOCHS, SWEEP_EVERY = (
    3,
    4,
    2,
)  # the sweep's check: num_samples, MAX_EPOCHS, checkpoint_every
EXTRA = 12  # suggestions past the budget, for the searcher's direction


def budget_words(budget: str, name: str) -> str:
    """How a message says which budget it judged under: "with the smoke budget (MAX_EPOCHS = 8)"."""
    return f"with the {budget} budget ({name} = {BUDGETS[budget][name]})"


def stand_in_trials(count: int = 24) -> list[tuple[float, float]]:
    """Made-up trials: each scores base + slope * epoch, some rising, some falling."""
    rng = np.random.default_rng(0)
    return [(round(rng.uniform(0.5, 0.9), 3), round(rng.uniform(-0.01, 0.02), 4)) for _ in range(count)]


def rising(lr: float) -> float:
    """A made-up validation accuracy that grows with the learning rate, on a log scale."""
    return 0.88 + 0.02 * (math.log10(lr) + 5)


def falling(lr: float) -> float:
    return 0.98 - 0.02 * (math.log10(lr) + 5)


def low_learning_rate_epochs(max_epochs: int) -> int:
    """How many of the last epochs train with a learning rate below LOW_LEARNING_RATE of its start,
    by the notebook's cosine decay (the last quarter of training)."""
    share = [0.5 * (1 + math.cos(math.pi * epoch / max_epochs)) for epoch in range(max_epochs)]
    return sum(s < LOW_LEARNING_RATE for s in share)


def learning_curve(max_epochs: int) -> list[float]:
    """A made-up validation accuracy per epoch: rising, then flat with a little jitter."""
    return [
        0.96 - 0.16 * math.exp(-4 * e / max_epochs) + 0.004 * math.sin(7.0 * e)
        for e in range(1, max_epochs + 1)
    ]


def stand_in_curves(max_epochs: int) -> dict[str, list[float]]:
    """The learning curves steady_accuracy is given, by name: flat, a full trial, the same with other
    early epochs, with one lucky epoch (each late epoch in turn), one point better at the end, and a
    trial stopped after two epochs."""
    curve, late = learning_curve(max_epochs), low_learning_rate_epochs(max_epochs)
    early = [0.5 if epoch < max_epochs - late else value for epoch, value in enumerate(curve)]
    better = [value + 0.01 if epoch >= max_epochs - late else value for epoch, value in enumerate(curve)]
    curves = {"flat": [0.95] * max_epochs, "full": curve, "other early epochs": early, "better end": better}
    for epoch in range(max_epochs - late, max_epochs):
        curves[f"lucky epoch {epoch + 1}"] = [v + 0.05 * (e == epoch) for e, v in enumerate(curve)]
    curves["stopped after 2 epochs"] = curve[:2]
    return curves


# --- helpers ---------------------------------------------------------------------------------------


def raised(observed: dict, what: str) -> None:
    """Fail with what the student's code raised, if it did."""
    error = observed.get("raised")
    assert not error, f"{what} raised {error}"


def numbers_of(key: str, values: list) -> np.ndarray:
    wrong = [v for v in values if not isinstance(v, (int, float)) or isinstance(v, bool)]
    assert not wrong, f"{key} should be a number, not {wrong[0]}"
    return np.asarray(values, dtype=float)


# --- TODO 1: the search space ----------------------------------------------------------------------


def drawn(key: str, domain: dict) -> np.ndarray:
    assert not domain.get("grid"), (
        f"{key} is a grid: random search and TPE draw configurations from distributions"
    )
    assert domain.get("domain"), (
        f"{key} should be a Tune search domain that Tune samples from, not {domain['repr']}"
    )
    assert not domain.get("raised"), f"Tune could not sample {key} ({domain['raised']})"
    return numbers_of(key, domain["samples"])


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


def search_space(observed: dict, server=None) -> str:
    """SEARCH_SPACE samples each hyperparameter over its range on the scale its effect goes by."""
    assert observed["type"] == "dict", "SEARCH_SPACE should be a dict: run the TODO cell above"
    keys, given = sorted({*FACTS, "hidden_size"}), sorted(observed["keys"])
    assert given == keys, (
        f"SEARCH_SPACE's keys should be the hyperparameters the trainable uses, {keys}, not {given}"
    )
    for key, (lower, upper, scale) in FACTS.items():
        spans(key, drawn(key, observed["domains"][key]), lower, upper, scale)
    widths = drawn("hidden_size", observed["domains"]["hidden_size"])
    assert set(widths) == set(WIDTHS), (
        f"hidden_size should be one of {WIDTHS}, not {[int(width) for width in sorted(set(widths))[:8]]}"
    )
    shares = [float(np.mean(widths == width)) for width in WIDTHS]
    assert max(abs(s - 1 / len(WIDTHS)) for s in shares) < 0.04, (
        f"each width should be as likely as the others, not {', '.join(f'{s:.0%}' for s in shares)}"
    )
    assert not observed["optuna_refused"], (
        f"Optuna's TPE (section 5) cannot search this space ({observed['optuna_refused']}): use Tune's "
        "distributions"
    )
    return "OK: each hyperparameter is sampled over its range, on the scale its effect goes by"


# --- TODO 2: the trainable -------------------------------------------------------------------------


def reports_of(run: dict, what: str) -> list[dict]:
    raised(run, what)
    for report in run["reports"]:
        for key, value in report["metrics"].items():
            numbers_of(f"the reported {key}", [value])
    return run["reports"]


def checkpointed(reports: list[dict]) -> list[int]:
    return [epoch for epoch, report in enumerate(reports, 1) if report["checkpoint"]]


def trainable(observed: dict, server=None) -> str:
    """train_digits reports once per epoch, checkpoints every `checkpoint_every` epochs (never when it is
    0), and a trial continued from a checkpoint repeats the epochs after it exactly."""
    epochs, every, runs = TRAINABLE_EPOCHS, TRAINABLE_EVERY, observed["runs"]
    run = f"run with MAX_EPOCHS = {epochs} by the self-check"
    reports = reports_of(runs["never"], f"train_digits(..., checkpoint_every=0), {run},")
    assert len(reports) == epochs, (
        f"train_digits reported {len(reports)} times in {epochs} epochs ({run}): report once per epoch"
    )
    keys = sorted(reports[0]["metrics"])
    assert {"val_accuracy", "val_loss"} <= set(keys), f"report val_accuracy and val_loss, not {keys}"
    assert not checkpointed(reports), (
        "with checkpoint_every=0, train_digits should never checkpoint; it did after epochs "
        f"{checkpointed(reports)}"
    )
    reports = reports_of(runs["every"], f"train_digits(..., checkpoint_every={every}), {run},")
    assert len(reports) == epochs, (
        f"with checkpoint_every={every}, train_digits reported {len(reports)} times in {epochs} epochs: "
        "report once per epoch, with or without a checkpoint"
    )
    expected = list(range(every, epochs + 1, every))
    assert checkpointed(reports) == expected, (
        f"with checkpoint_every={every}, the reports of epochs {expected} should carry a checkpoint, not "
        f"those of epochs {checkpointed(reports)}"
    )
    resumed = runs["resumed"]
    assert not resumed["raised"], (
        f"train_digits could not continue from its own checkpoint ({resumed['raised']}): the checkpoint "
        "should hold everything restore_checkpoint reads back"
    )
    again = reports_of(resumed, "train_digits, continued from its checkpoint,")
    assert len(again) == epochs - every, (
        f"continued from the checkpoint of epoch {every}, train_digits should train epochs {every + 1} to "
        f"{epochs}, not {len(again)} epochs"
    )
    for epoch, (after, before) in enumerate(zip(again, reports[every:], strict=True), every + 1):
        assert after["metrics"]["val_loss"] == before["metrics"]["val_loss"], (
            f"continued from the checkpoint of epoch {every}, epoch {epoch} gave val_loss "
            f"{after['metrics']['val_loss']:.6f} instead of {before['metrics']['val_loss']:.6f}: the "
            "checkpoint should hold everything the next epochs depend on"
        )
    return (
        f"OK: one report per epoch, a checkpoint every {every} (none with 0), and continued from epoch "
        f"{every} the trial repeats its epochs exactly"
    )


# --- TODO 3: the sweep, logged to MLflow -----------------------------------------------------------


def logger_arguments(logger: dict, tracking_uri: str) -> list[str]:
    """What is wrong with the arguments a trials' logger was made with: they decide where it logs."""
    uri, experiment = logger.get("tracking_uri"), logger.get("experiment_name")
    wrong = []
    if uri is None:
        wrong.append(
            "the logger was made without the tracking server's address: Ray's callback then points this "
            "notebook's MLflow at its default, a local database, where run_sweep's parent run does not "
            f"exist. Give it the address this notebook logs to ({tracking_uri})"
        )
    elif uri != tracking_uri:
        wrong.append(f"the logger should log to this notebook's tracking server, {tracking_uri}, not {uri!r}")
    if experiment != EXPERIMENT:
        wrong.append(
            f"the logger should log to this notebook's experiment, {EXPERIMENT!r}, not {experiment!r}"
        )
    if "mlflow.parentRunId" not in (logger.get("tags") or {}):
        wrong.append(
            "the trials' MLflow runs would not be nested under the sweep's parent run: tag them "
            "mlflow.parentRunId"
        )
    if logger.get("log_params_on_trial_end") is not True:
        wrong.append(
            "the logger should log each trial's params as the trial ends: PBT changes a trial's config as "
            "it trains, and MLflow refuses to change a param once logged"
        )
    return wrong


def sweep(observed: dict, server: dict) -> str:
    """run_sweep, given a param_space, a logger class, callbacks, checkpoint_every and tune_options of the
    check's own, ran a sweep that used each of them, optimised val_accuracy upwards, kept its state under
    STORAGE_PATH, and left a finished MLflow run per trial, nested under the sweep's parent run, with the
    trial's config and every epoch. (A logger made with arguments that log elsewhere stops the check's
    sweep before it runs.)"""
    before, after = observed["tracking_uri_before"], observed["tracking_uri_after"]
    assert before == after, (
        f"the sweep moved this notebook's MLflow from {before} to {after}, where run_sweep's parent run does "
        "not exist: the logger should log to the address this notebook logs to"
    )
    for logger in observed["loggers"]:
        wrong = logger_arguments(logger, observed["tracking_uri"])
        assert not wrong, wrong[0]
    raised(observed, "run_sweep(...)")
    assert len(observed["loggers"]) == 1, (
        f"run_sweep made {len(observed['loggers'])} loggers with log_with, not one: the trials' logger"
    )
    assert observed["is_result_grid"], (
        f"run_sweep should return what Tuner.fit returns, not a {observed['returned']}"
    )
    assert not observed["errors"], f"a trial failed: {observed['errors'][0]}"
    trials, nonce = observed["trials"], observed["nonce"]
    assert len(trials) == SWEEP_TRIALS, (
        f"given num_samples={SWEEP_TRIALS} among its tune_options, run_sweep ran {len(trials)} trials: "
        "tune_options belong in TuneConfig"
    )
    assert all(trial["config"].get("self_check") == nonce for trial in trials), (
        "the trials' configurations did not come from the param_space run_sweep was given"
    )
    assert observed["scheduler_results"] > 0, (
        "the scheduler given among run_sweep's tune_options never saw a result: every tune_option belongs "
        "in TuneConfig"
    )
    watched, reports = observed["callback"], SWEEP_TRIALS * SWEEP_EPOCHS
    assert watched["results"] == reports, (
        f"a callback given to run_sweep saw {watched['results']} of the sweep's {reports} reports: "
        "RunConfig's callbacks should include run_sweep's `callbacks`"
    )
    reserved = [start["resources"] for start in watched["starts"]]
    assert all(resources == {"CPU": 1.0} for resources in reserved), (
        f"each trial should reserve one CPU (Tune then runs one trial per core), not {reserved[0]}"
    )
    expected = list(range(SWEEP_EVERY, SWEEP_EPOCHS + 1, SWEEP_EVERY))
    for trial in trials:
        got = watched["checkpoints"].get(trial["trial_id"], [])
        assert got == expected, (
            f"given checkpoint_every={SWEEP_EVERY}, a trial of {SWEEP_EPOCHS} epochs handed Tune checkpoints "
            f"after epochs {got}, not {expected}: the trainable should get run_sweep's checkpoint_every"
        )
    storage = observed["storage_path"].split("://")[-1].rstrip("/")
    assert storage and storage in observed["experiment_path"], (
        f"Tune kept the sweep in {observed['experiment_path']}: RunConfig's storage_path should be "
        f"STORAGE_PATH ({observed['storage_path']})"
    )
    best = observed["best"]
    assert "raised" not in best, "TuneConfig should name the metric to optimise and its mode"
    last = {trial["path"]: trial["last_val_accuracy"] for trial in trials}
    assert last[best["path"]] == max(last.values()), (
        f"the Tuner's best trial ended with val_accuracy {last[best['path']]:.4f}, another with "
        f"{max(last.values()):.4f}: does the Tuner optimise the validation accuracy the right way?"
    )
    parent = server["parent"]
    assert parent, (
        f"MLflow holds no parent run named {observed['strategy']!r} in the experiment {EXPERIMENT!r}"
    )
    children = server["children"]
    assert len(children) == SWEEP_TRIALS and not server["unnested"], (
        f"{server['unnested']} of the trials' MLflow runs are not nested under the sweep's parent run: tag "
        "them mlflow.parentRunId"
    )
    for child in children:
        assert child["params"].get("self_check") == nonce and {"lr", "hidden_size"} <= set(child["params"]), (
            "the trials' config should be logged as params"
        )
        assert child["val_accuracy_steps"] == SWEEP_EPOCHS, (
            f"a trial's run holds {child['val_accuracy_steps']} values of val_accuracy, not one per epoch "
            f"({SWEEP_EPOCHS})"
        )
        assert child["status"] == "FINISHED", f"a trial's run should be FINISHED, not {child['status']}"
    return (
        f"OK: a sweep of {SWEEP_TRIALS} trials used the space, options, callbacks, checkpoints and logger it "
        "was given, its best trial the most accurate, each trial in a run nested under the sweep's"
    )


# --- TODO 4: ASHA ----------------------------------------------------------------------------------


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


def asha_under(seen: dict, max_epochs: int, where: str) -> None:
    for key, wrong in [
        ("is_asha", f"make_asha() should return an ASHAScheduler, not {seen.get('type')}"),
        ("fresh", "make_asha() should build a new scheduler each time it is called"),
        ("properties_accepted", "leave metric and mode out of the scheduler: it takes them from TuneConfig"),
    ]:
        if key not in seen:
            raised(seen, f"make_asha(), {where},")
        assert seen[key], wrong
    raised(seen, f"{where}, the scheduler, fed made-up trials,")
    trials, got = stand_in_trials(), seen["stops"]
    expected = halving(trials, ASHA_RUNGS, max_epochs)
    judged = sorted(rung for rung in ASHA_RUNGS if rung < max_epochs)
    early = [epoch for epoch in got if epoch is not None and epoch < judged[0]]
    assert not early, (
        f"{where}, ASHA stopped a trial after {min(early)} epoch(s): it should judge trials first after "
        f"{judged[0]} epochs (its grace period)"
    )
    stops = sorted({epoch for epoch in got if epoch is not None and epoch != max_epochs})
    assert set(stops) <= set(judged), (
        f"{where}, ASHA stopped trials after {stops} epochs: its rungs should be at {judged} (below max_t = "
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
                f"{where}, a trial that passed every rung {when}: no trial should train more than MAX_EPOCHS "
                "epochs, and none that passes every rung fewer (max_t)"
            )
    for epoch, fate in zip(got, expected, strict=True):
        if epoch != fate["stop"]:
            rung = min(epoch, fate["stop"])
            before, beaten = fate["rungs"][rung]
            did = "stopped it" if epoch < fate["stop"] else "let it go on"
            raise AssertionError(
                f"{where}, a trial reached the rung of epoch {rung} after {before} "
                f"other{'s' * (before != 1)}, beat {beaten} of them, and ASHA {did}. A trial should go on "
                "only while it is among the best 1/eta of the trials that reached the rung, eta being the "
                "reduction factor (also the ratio between rungs)"
            )


def asha(observed: dict, server=None) -> str:
    """make_asha() builds a fresh scheduler that stops trials as ASHA with the notebook's rungs does, and
    no later than MAX_EPOCHS, under either budget."""
    assert observed["callable"], "make_asha should be a function that returns a new scheduler"
    for budget, values in BUDGETS.items():
        asha_under(observed["budgets"][budget], values["MAX_EPOCHS"], budget_words(budget, "MAX_EPOCHS"))
    return (
        f"OK: ASHA stopped {len(stand_in_trials())} made-up trials as asynchronous halving does at the rungs "
        f"{ASHA_RUNGS}, under both budgets"
    )


# --- TODO 5: TPE, a searcher that learns ------------------------------------------------------------


def mean_log_lr(configs: list[dict]) -> float:
    return float(np.mean([math.log10(config["lr"]) for config in configs]))


NAMED_SEARCHER = {"searcher": "OptunaSearch", "sampler": "TPESampler"}


def searcher_under(seen: dict, trials: int, where: str) -> str:
    classes = seen.get("classes")
    if classes is None:
        raised(seen, f"make_tpe(), {where},")
    assert classes["searcher"] == "OptunaSearch", (
        "make_tpe() should build Tune's search algorithm for Optuna (OptunaSearch), not "
        f"{classes['searcher']}"
    )
    assert classes["sampler"] == "TPESampler", (
        f"the OptunaSearch should sample with Optuna's TPE (a TPESampler), not {classes['sampler']}"
    )
    for key, wrong in [
        ("fresh", "make_tpe() should build a new searcher each time it is called"),
        (
            "accepted",
            "leave the search space, metric and mode out of the searcher: it takes them from the Tuner",
        ),
    ]:
        if key not in seen:
            raised(seen, f"make_tpe(), {where},")
        assert seen[key], wrong
    raised(seen, f"{where}, the searcher, in a sweep of made-up trials,")
    limit = seen["limit"]
    assert limit is not None, (
        f"{where}, the searcher gave all {trials} configurations before any trial finished: TPE learns from "
        "finished trials, so limit how many run at once"
    )
    assert limit == MAX_CONCURRENT, (
        f"{limit} trials ran at once: run {MAX_CONCURRENT} at a time, one per core"
    )
    assert seen["again"] == seen["first"], (
        "two searchers from make_tpe() suggested different configurations: seed the sampler, so that the "
        "sweep can be repeated (OptunaSearch passes its `seed` only to a sampler it makes itself)"
    )
    up, down = seen["up"], seen["down"]
    learned = next((k for k, (a, b) in enumerate(zip(up, down, strict=True)) if a != b), None)
    assert learned is not None, (
        "the searcher's suggestions do not depend on how the finished trials scored: it samples at random"
    )
    chosen, needed = trials - learned, math.ceil(trials / 3)
    assert chosen >= needed, (
        f"{where}, only {max(chosen, 0)} of the {trials} trials were chosen from the scores of finished "
        f"trials, not at least {needed}: TPE samples at random until n_startup_trials trials have finished, "
        f"and with {MAX_CONCURRENT} trials at a time, the trial before the one being suggested is still "
        "running"
    )
    towards, away = mean_log_lr(up[-8:]), mean_log_lr(down[-8:])
    assert towards > away + 0.5, (
        "fed trials that scored best at a high learning rate, the searcher suggested learning rates around "
        f"{10**towards:.1g}; fed the opposite, around {10**away:.1g}: it should move towards the best scores "
        "(does it maximise val_accuracy?)"
    )
    return f"{chosen} of {trials}"


def searcher(observed: dict, server=None) -> str:
    """make_tpe() builds a fresh, seeded TPE searcher (Optuna's, through Tune's OptunaSearch) that runs
    MAX_CONCURRENT trials at a time and, within a budget of TRIALS, chooses at least a third of them from
    what finished trials scored, moving towards the configurations that scored best, under either budget."""
    assert observed["callable"], "make_tpe should be a function that returns a new searcher"
    chosen = [
        searcher_under(observed["budgets"][b], v["TRIALS"], budget_words(b, "TRIALS"))
        for b, v in BUDGETS.items()
    ]
    return (
        f"OK: Optuna's TPE, seeded, {MAX_CONCURRENT} trials at a time, its model choosing "
        f"{' and '.join(chosen)} trials from the scores of finished ones, towards the best"
    )


# --- TODO 6: a steady score ------------------------------------------------------------------------


def steady_under(seen: dict, max_epochs: int, where: str) -> int:
    late = low_learning_rate_epochs(max_epochs)

    def score(name: str) -> float:
        error = seen["raised"].get(name)
        assert not error, (
            f"{where}, steady_accuracy failed on the curve '{name}' ({error}): it takes a pandas Series of "
            "validation accuracies, one per epoch in order, and returns a number"
        )
        [value] = numbers_of("steady_accuracy's score", [seen["scores"][name]])
        assert math.isfinite(value), (
            f"{where}, steady_accuracy gave {value} for the curve '{name}': every trial needs a score, from "
            "the epochs it has"
        )
        return value

    assert abs(score("flat") - 0.95) < 1e-9, (
        "a trial whose validation accuracy is 0.95 at every epoch should score 0.95: score it on the "
        "accuracy scale"
    )
    base = score("full")
    moved = score("other early epochs") - base
    assert abs(moved) < 1e-9, (
        f"{where}, changing the epochs trained at a high learning rate (above {LOW_LEARNING_RATE:.0%} of its "
        f"start) moved the score by {100 * moved:+.2f} points: score what the trial's model is worth at the "
        "end of training, not how it got there"
    )
    for epoch in reversed(range(max_epochs - late + 1, max_epochs + 1)):  # the last epoch first
        gain = score(f"lucky epoch {epoch}") - base
        assert gain <= 0.05 / 2 + 1e-9, (
            f"{where}, one lucky epoch (epoch {epoch}, 5 points up) raised the score by {100 * gain:.1f} "
            "points: one epoch should count for little"
        )
        assert gain > 1e-9, (
            f"{where}, a lucky epoch late in training (epoch {epoch}) did not move the score: every epoch "
            "trained at a low learning rate measures nearly the same model, and the more of them count "
            "alike, the less one lucky epoch moves the score"
        )
    raised_by = score("better end") - base
    assert abs(raised_by - 0.01) < 1e-6, (
        f"{where}, a trial one point better in each of its epochs at a low learning rate should score one "
        f"point more, not {100 * raised_by:.2f}: weigh those epochs alike"
    )
    score("stopped after 2 epochs")
    return late


def steady(observed: dict, server=None) -> str:
    """steady_accuracy scores a trial by the end of its training, every epoch trained at a low learning rate
    alike: not by earlier epochs, and not by any one lucky epoch, under either budget."""
    assert observed["callable"], "steady_accuracy should be a function"
    late = {
        b: steady_under(observed["budgets"][b], v["MAX_EPOCHS"], budget_words(b, "MAX_EPOCHS"))
        for b, v in BUDGETS.items()
    }
    windows = " and ".join(f"its last {n} of {BUDGETS[b]['MAX_EPOCHS']}" for b, n in late.items())
    return f"OK: steady_accuracy scores a trial by {windows} epochs, alike"


JUDGES = {
    "search_space": search_space,
    "trainable": trainable,
    "sweep": sweep,
    "asha": asha,
    "searcher": searcher,
    "steady": steady,
}
