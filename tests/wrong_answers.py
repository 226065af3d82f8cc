"""Plausible wrong answers to each TODO of ray_tune_solution.ipynb: mistakes a student could make, each of
which the TODO's self-check must catch with an AssertionError that says what is wrong; and right answers
written other ways than the solution, which every self-check must pass.

Each wrong answer is the wrong code of the TODO's SOLUTION region, a name for the report, and words the
self-check's message must contain (so that it names this mistake, not another). `wrong_answers()` gives,
per TODO tag, (name, source of the whole TODO cell with its SOLUTION region replaced by the wrong code),
so that the rest of the cell follows the solution as it is today; `right_answers()` the same for
RIGHT_ANSWERS.
"""

import textwrap
from dataclasses import dataclass

import nbformat

from tools import make_exercise


@dataclass(frozen=True)
class WrongAnswer:
    name: str
    code: str
    says: str  # words the self-check's message must contain


SPACE = """
    SEARCH_SPACE = {{
        "lr": {lr},
        "weight_decay": {weight_decay},
        "hidden_size": {hidden_size},
        "dropout": {dropout},
    }}
"""
RIGHT_SPACE = {
    "lr": "tune.loguniform(1e-4, 1e-1)",
    "weight_decay": "tune.loguniform(1e-6, 1e-2)",
    "hidden_size": "tune.choice([32, 64, 128, 256])",
    "dropout": "tune.uniform(0.0, 0.5)",
}


def space(**changed: str) -> str:
    return SPACE.format(**{**RIGHT_SPACE, **changed})


CHECKPOINT = """
    state = {{
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,{rngs}
    }}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / "state.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
"""
RNGS = '\n        "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(),'


def report(condition: str, rngs: str = RNGS, otherwise: bool = True) -> str:
    """train_digits' reporting: a checkpoint (holding `rngs`) when `condition`, else (if `otherwise`) a
    plain report."""
    checkpoint = textwrap.dedent(CHECKPOINT.format(rngs=rngs)).strip()
    code = f"if {condition}:\n{textwrap.indent(checkpoint, '    ')}\n"
    return code + ("else:\n    tune.report(metrics)\n" if otherwise else "")


LOGGER = "TRACKING_URI, experiment_name=EXPERIMENT, tags=tags, log_params_on_trial_end=True"


def tuner(
    mode: str = "max", logger: str = LOGGER, trainable: str = "sweep_trainable(checkpoint_every)",
    space: str = "param_space", options: str = "**tune_options", storage: str = "storage_path=STORAGE_PATH, ",
    callbacks: str = "[*callbacks, logger]",
) -> str:  # fmt: skip
    """run_sweep's Tuner, each part as given."""
    return f"""
        tags = {{"mlflow.parentRunId": parent.info.run_id}}
        logger = log_with({logger})
        tuner = tune.Tuner(
            {trainable},
            param_space={space},
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="{mode}", reuse_actors=True, {options}),
            run_config=tune.RunConfig({storage}callbacks={callbacks}),
        )
        results = tuner.fit()
    """


def tpe(
    sampler: str = "optuna.samplers.TPESampler(n_startup_trials=TRIALS // 3, seed=SEED)",
    limit: int | None = 2,
    **options: str,
) -> str:
    """make_tpe's body: this sampler in an OptunaSearch (with `options`), at most `limit` trials at once."""
    search = f"OptunaSearch(sampler=sampler{''.join(f', {k}={v}' for k, v in options.items())})"
    limited = search if limit is None else f"ConcurrencyLimiter({search}, max_concurrent={limit})"
    return f"sampler = {sampler}\nreturn {limited}"


WRONG_ANSWERS = {
    "todo-1": [
        WrongAnswer("a uniform learning rate", space(lr="tune.uniform(1e-4, 1e-1)"), "effect goes by ratio"),
        WrongAnswer(
            "four learning rates to choose from",
            space(lr="tune.choice([1e-4, 1e-3, 1e-2, 1e-1])"),
            "only 4 values",
        ),
        WrongAnswer(
            "a grid of learning rates", space(lr="tune.grid_search([1e-4, 1e-3, 1e-2])"), "is a grid"
        ),
        WrongAnswer(
            "any width from 32 to 256", space(hidden_size="tune.randint(32, 257)"), "should be one of"
        ),
        WrongAnswer(
            "dropout on a log scale", space(dropout="tune.loguniform(0.01, 0.5)"), "effect goes by step"
        ),
    ],
    "todo-2": [
        WrongAnswer(
            "a checkpoint without the random number generators' states",
            report("checkpoint_every and (epoch + 1) % checkpoint_every == 0", rngs=""),
            "everything restore_checkpoint reads back",
        ),
        WrongAnswer(
            "no guard for checkpoint_every=0",
            report("(epoch + 1) % checkpoint_every == 0"),
            "ZeroDivisionError",
        ),
        WrongAnswer(
            "a checkpoint one epoch early",
            report("checkpoint_every and epoch % checkpoint_every == 0"),
            "should carry a checkpoint",
        ),
        WrongAnswer(
            "a report only with a checkpoint",
            report("checkpoint_every and (epoch + 1) % checkpoint_every == 0", otherwise=False),
            "report once per epoch",
        ),
    ],
    "todo-3": [  # each costs a sweep of the check's, but those whose logger would log elsewhere
        WrongAnswer("the validation accuracy minimised", tuner(mode="min"), "the right way"),
        WrongAnswer(
            "trials not nested under the sweep's run",
            tuner(logger=LOGGER.replace("tags=tags, ", "")),
            "not be nested",
        ),
        WrongAnswer("Tune's state outside STORAGE_PATH", tuner(storage=""), "storage_path should be"),
        WrongAnswer(
            "tune_options dropped but num_samples",
            tuner(options='num_samples=tune_options["num_samples"]'),
            "every tune_option belongs in TuneConfig",
        ),
        WrongAnswer("checkpoint_every dropped", tuner(trainable="sweep_trainable()"), "checkpoint_every"),
        WrongAnswer("the caller's callbacks dropped", tuner(callbacks="[logger]"), "run_sweep's `callbacks`"),
        WrongAnswer(
            "the notebook's search space, not param_space", tuner(space="SEARCH_SPACE"), "param_space"
        ),
        WrongAnswer(
            "the logger without the experiment",
            tuner(logger=LOGGER.replace("experiment_name=EXPERIMENT, ", "")),
            "this notebook's experiment",
        ),
        WrongAnswer(
            "the params logged as trials start",
            tuner(logger=LOGGER.replace(", log_params_on_trial_end=True", "")),
            "as the trial ends",
        ),
        WrongAnswer(
            "the logger without the tracking URI",
            tuner(logger=LOGGER.replace("TRACKING_URI, ", "")),
            "without the tracking server's address",
        ),
    ],
    "todo-4": [
        WrongAnswer(
            "reduction factor 2",
            "return ASHAScheduler(max_t=MAX_EPOCHS, grace_period=2, reduction_factor=2)",
            "rungs should be at",
        ),
        WrongAnswer(
            "no grace period (trials judged after one epoch)",
            "return ASHAScheduler(max_t=MAX_EPOCHS, reduction_factor=3)",
            "grace period",
        ),
        WrongAnswer(
            "max_t left at its default (100)",
            "return ASHAScheduler(grace_period=2, reduction_factor=3)",
            "no trial should train more than",
        ),
        WrongAnswer(
            "max_t of the full budget (20), whatever MAX_EPOCHS",
            "return ASHAScheduler(max_t=20, grace_period=2, reduction_factor=3)",
            "no trial should train more than",
        ),
        WrongAnswer(
            "metric and mode in the scheduler, the wrong way",
            'return ASHAScheduler(metric="val_accuracy", mode="min", max_t=MAX_EPOCHS, grace_period=2, '
            "reduction_factor=3)",
            "leave metric and mode out",
        ),
    ],
    "todo-5": [
        WrongAnswer(
            "Optuna's default start-up (10 random trials)",
            "return ConcurrencyLimiter(OptunaSearch(seed=SEED), max_concurrent=2)",
            "n_startup_trials",
        ),
        WrongAnswer(
            "a third of the trials left to TPE, forgetting the trials that run at once",
            tpe("optuna.samplers.TPESampler(n_startup_trials=TRIALS - TRIALS // 3, seed=SEED)"),
            "still running",
        ),
        WrongAnswer(
            "a start-up of 6, a third of the full budget's 9 trials left to TPE",
            tpe("optuna.samplers.TPESampler(n_startup_trials=5, seed=SEED)"),
            "with the smoke budget",
        ),
        WrongAnswer("random sampling", tpe("optuna.samplers.RandomSampler(seed=SEED)"), "TPESampler"),
        WrongAnswer(
            "another sampler that learns (a Gaussian process)",
            tpe("optuna.samplers.GPSampler(n_startup_trials=2, seed=SEED)"),
            "TPESampler",
        ),
        WrongAnswer(
            "the seed given to OptunaSearch beside a sampler",
            tpe("optuna.samplers.TPESampler(n_startup_trials=TRIALS // 3)", seed="SEED"),
            "seed the sampler",
        ),
        WrongAnswer("no concurrency limit", tpe(limit=None), "limit how many run at once"),
        WrongAnswer("four trials at a time", tpe(limit=4), "4 trials ran at once"),
    ],
    "todo-6": [
        WrongAnswer("the last epoch", "return val_accuracy.iloc[-1]", "one lucky epoch"),
        WrongAnswer("the best epoch", "return val_accuracy.max()", "one lucky epoch"),
        WrongAnswer("the mean over all epochs", "return val_accuracy.mean()", "high learning rate"),
        WrongAnswer(
            "the last five epochs, whatever MAX_EPOCHS",
            "return val_accuracy.tail(5).mean()",
            "high learning rate",
        ),
        WrongAnswer(
            "the median of the last quarter",
            "return val_accuracy.tail(MAX_EPOCHS // 4).median()",
            "did not move the score",
        ),
        WrongAnswer(
            "a quarter of the trial's own epochs",
            "return val_accuracy.tail(len(val_accuracy) // 4).mean()",
            "every trial needs a score",
        ),
    ],
}
RIGHT_ANSWERS = {  # right answers written other ways than the solution: every self-check passes them
    "todo-1": [
        space(
            lr="tune.qloguniform(1e-4, 1e-1, 1e-5)",
            hidden_size="tune.choice([2**k for k in range(5, 9)])",
            dropout="tune.quniform(0.0, 0.5, 0.05)",
        )
    ],
    "todo-2": [
        """
        from ray.tune import Checkpoint, report
        if checkpoint_every > 0 and epoch % checkpoint_every == checkpoint_every - 1:
            folder = tempfile.mkdtemp()
            torch.save(
                dict(model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch,
                     torch_rng=torch.get_rng_state(), shuffle_rng=shuffle.get_state()),
                os.path.join(folder, "state.pt"),
            )
            report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            report(metrics)
        """
    ],
    "todo-3": [
        """
        logger = log_with(
            tracking_uri=TRACKING_URI, log_params_on_trial_end=True, experiment_name=EXPERIMENT,
            tags={"mlflow.parentRunId": parent.info.run_id},
        )
        results = tune.Tuner(
            trainable=sweep_trainable(checkpoint_every=checkpoint_every),
            param_space=param_space,
            tune_config=tune.TuneConfig(**tune_options, mode="max", metric="val_accuracy"),
            run_config=tune.RunConfig(callbacks=list(callbacks) + [logger], storage_path=STORAGE_PATH),
        ).fit()
        """
    ],
    "todo-4": [
        "return ASHAScheduler(time_attr='training_iteration', grace_period=ASHA_RUNGS[0], "
        "reduction_factor=ASHA_RUNGS[1] // ASHA_RUNGS[0], max_t=MAX_EPOCHS)"
    ],
    "todo-5": [
        "searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=SEED, n_startup_trials=2))\n"
        "return ConcurrencyLimiter(searcher, 2)"
    ],
    "todo-6": [
        "return float(np.mean(val_accuracy.to_numpy()[-max(1, MAX_EPOCHS // 4):]))",
        "low = [lr_share(epoch) < 0.15 for epoch in range(len(val_accuracy))]\n"
        "return val_accuracy[low].mean() if any(low) else val_accuracy.mean()",
    ],
}


def todo_cells(solution_path=make_exercise.SOLUTION) -> dict[str, str]:
    """todo-<k> -> the solution's TODO cell."""
    solution = nbformat.read(solution_path, as_version=4)
    return {
        f"todo-{k}": solution.cells[index].source
        for k, (index, _) in enumerate(make_exercise.todo_pairs(solution), 1)
    }


def answered(todo_cell: str, code: str) -> str:
    """The TODO cell with its SOLUTION region replaced by code."""
    [region] = make_exercise.REGION.finditer(todo_cell)
    return todo_cell.replace(region[0], textwrap.indent(textwrap.dedent(code).strip("\n"), region["indent"]))


def wrong_answers(solution_path=make_exercise.SOLUTION) -> dict[str, list[tuple[str, str]]]:
    """todo-<k> -> [(name, the TODO cell's source with its SOLUTION region replaced by the wrong code)]."""
    cells = todo_cells(solution_path)
    return {
        todo: [(wrong.name, answered(cells[todo], wrong.code)) for wrong in WRONG_ANSWERS[todo]]
        for todo in cells
    }


def right_answers(solution_path=make_exercise.SOLUTION) -> dict[str, list[str]]:
    """todo-<k> -> the TODO cell written other ways (RIGHT_ANSWERS in place of its SOLUTION region)."""
    cells = todo_cells(solution_path)
    return {todo: [answered(cells[todo], code) for code in RIGHT_ANSWERS[todo]] for todo in cells}
