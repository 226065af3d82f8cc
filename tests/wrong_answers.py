"""Plausible wrong answers to each TODO of ray_tune_solution.ipynb: mistakes a student could make, each of
which the TODO's self-check must catch with an AssertionError that says what is wrong.

Each is the wrong code of the TODO's SOLUTION region, a name for the report, and words the self-check's
message must contain (so that it names this mistake, not another). `wrong_answers()` gives, per TODO
tag, (name, source of the whole TODO cell with its SOLUTION region replaced by the wrong code), so that
the rest of the cell follows the solution as it is today.
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


def tuner(mode: str = "max", tags: str = "tags=tags, ", storage: str = "storage_path=STORAGE_PATH, ") -> str:
    """run_sweep's Tuner, with `mode`, the logger's `tags` and RunConfig's `storage` as given."""
    return f"""
        trainable = tune.with_parameters(train_digits, checkpoint_every=checkpoint_every)
        tags = {{"mlflow.parentRunId": parent.info.run_id}}
        logger = log_with(TRACKING_URI, experiment_name=EXPERIMENT, {tags}log_params_on_trial_end=True)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {{"cpu": 1}}),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="val_accuracy", mode="{mode}", reuse_actors=True, **tune_options
            ),
            run_config=tune.RunConfig({storage}callbacks=[*callbacks, logger]),
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
    "todo-3": [  # each costs a sweep
        WrongAnswer("the validation accuracy minimised", tuner(mode="min"), "the right way"),
        WrongAnswer("trials not nested under the sweep's run", tuner(tags=""), "not nested"),
        WrongAnswer("Tune's state outside STORAGE_PATH", tuner(storage=""), "storage_path should be"),
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
        WrongAnswer("random sampling", tpe("optuna.samplers.RandomSampler(seed=SEED)"), "samples at random"),
        WrongAnswer(
            "the seed given to OptunaSearch beside a sampler",
            tpe("optuna.samplers.TPESampler(n_startup_trials=TRIALS // 3)", seed="SEED"),
            "seed the sampler",
        ),
        WrongAnswer(
            "no concurrency limit",
            tpe(limit=None),
            "limit how many run at once",
        ),
        WrongAnswer(
            "four trials at a time",
            tpe(limit=4),
            "4 trials ran at once",
        ),
    ],
    "todo-6": [
        WrongAnswer("the last epoch", "return val_accuracy.iloc[-1]", "one lucky epoch"),
        WrongAnswer("the best epoch", "return val_accuracy.max()", "one lucky epoch"),
        WrongAnswer("the mean over all epochs", "return val_accuracy.mean()", "changing epochs"),
        WrongAnswer(
            "the last five epochs, whatever MAX_EPOCHS",
            "return val_accuracy.tail(5).mean()",
            "changing epochs",
        ),
        WrongAnswer(
            "a quarter of the trial's own epochs",
            "return val_accuracy.tail(len(val_accuracy) // 4).mean()",
            "every trial needs a score",
        ),
    ],
}


def wrong_answers(solution_path=make_exercise.SOLUTION) -> dict[str, list[tuple[str, str]]]:
    """todo-<k> -> [(name, the TODO cell's source with its SOLUTION region replaced by the wrong code)]."""
    solution = nbformat.read(solution_path, as_version=4)
    answers = {}
    for todo, (index, _) in enumerate(make_exercise.todo_pairs(solution), 1):
        [region] = make_exercise.REGION.finditer(solution.cells[index].source)
        answers[f"todo-{todo}"] = [
            (
                wrong.name,
                solution.cells[index].source.replace(
                    region[0], textwrap.indent(textwrap.dedent(wrong.code).strip("\n"), region["indent"])
                ),
            )
            for wrong in WRONG_ANSWERS[f"todo-{todo}"]
        ]
    return answers
