"""One plausible wrong answer per TODO of ray_tune_solution.ipynb: a mistake a student could make,
which the TODO's self-check must catch with an AssertionError that says what is wrong.

`wrong_answers()` gives, per TODO tag, the source of the whole TODO cell with its SOLUTION region
replaced by the wrong code, so that the rest of the cell follows the solution as it is today.
"""

import textwrap

import nbformat

from tools import make_exercise

WRONG_REGIONS = {
    # A uniform learning rate: most samples land between 0.01 and 0.1.
    "todo-1": """
        SEARCH_SPACE = {
            "lr": tune.uniform(1e-4, 1e-1),
            "weight_decay": tune.loguniform(1e-6, 1e-2),
            "hidden_size": tune.choice([32, 64, 128, 256]),
            "dropout": tune.uniform(0.0, 0.5),
        }
    """,
    # The checkpoint holds the model, the optimiser and the epoch, but not the random number generators.
    "todo-2": """
        if checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / "state.pt")
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
    """,
    # Ray's callback without the parent run's tag: every trial becomes a run of its own.
    "todo-3": """
        trainable = tune.with_parameters(train_digits, checkpoint_every=checkpoint_every)
        logger = log_with(TRACKING_URI, experiment_name=EXPERIMENT, log_params_on_trial_end=True)
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=param_space,
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", reuse_actors=True, **tune_options),
            run_config=tune.RunConfig(storage_path=str(RESULTS_DIR), callbacks=[*callbacks, logger]),
        )
        results = tuner.fit()
    """,
    # ASHA without a grace period: it judges trials after their first epoch.
    "todo-4": """
        ASHA = ASHAScheduler(max_t=MAX_EPOCHS, reduction_factor=3)
    """,
    # TPE without a concurrency limit: it would start most trials knowing nothing.
    "todo-5": """
        TPE = OptunaSearch(seed=SEED)
    """,
    # The best trial by its last epoch, a noisy measure.
    "todo-6": """
        trials = [trial for results in result_grids for trial in results]
        return max(trials, key=lambda trial: trial.metrics["val_accuracy"])
    """,
}


def wrong_answers(solution_path=make_exercise.SOLUTION) -> dict[str, str]:
    """todo-<k> -> the source of the TODO cell with its SOLUTION region replaced by the wrong code."""
    solution = nbformat.read(solution_path, as_version=4)
    answers = {}
    for todo, (index, _) in enumerate(make_exercise.todo_pairs(solution), 1):
        code = textwrap.dedent(WRONG_REGIONS[f"todo-{todo}"]).strip("\n")
        [region] = make_exercise.REGION.finditer(solution.cells[index].source)
        wrong = textwrap.indent(code, region["indent"])
        answers[f"todo-{todo}"] = solution.cells[index].source.replace(region[0], wrong)
    return answers
