"""The Ray Tune notebooks: the exercise follows the solution, stops at its first stub, and the
solution leaves a complete, well-organised record in MLflow."""

import os

import mlflow
import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from sklearn.datasets import load_digits

from tests.runs import find_runs, metric_steps, the_run
from tools import make_exercise

EXPERIMENT = "ray-tune-lab"
STRATEGIES = ("grid", "random", "asha", "optuna-tpe", "pbt")
SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"
TRIALS, MAX_EPOCHS = (4, 3) if SMOKE_TEST else (9, 20)


def test_exercise_is_generated_from_the_current_solution():
    assert make_exercise.main(["--check"]) == 0, "run `python tools/make_exercise.py`"


def test_generator_replaces_every_solution_region_with_a_hinted_stub():
    solution = nbformat.read(make_exercise.SOLUTION, as_version=4)
    exercise = make_exercise.make_exercise(solution)
    regions = sum(c.source.count("### BEGIN SOLUTION") for c in solution.cells)
    stubs = sum(c.source.count("raise NotImplementedError(") for c in exercise.cells)
    assert regions == stubs == 4
    assert "(exercise)" in exercise.cells[0].source
    assert not any("### " in c.source for c in exercise.cells if c.cell_type == "code")


def test_drift_is_detected(tmp_path, monkeypatch):
    stale = tmp_path / "ray_tune.ipynb"
    stale.write_text(make_exercise.EXERCISE.read_text().replace("TODO", "TO DO", 1))
    monkeypatch.setattr(make_exercise, "EXERCISE", stale)
    assert make_exercise.main(["--check"]) == 1


def test_exercise_runs_cleanly_up_to_its_first_stub(mlflow_server):
    notebook = nbformat.read(make_exercise.EXERCISE, as_version=4)
    first_stub = next(i for i, c in enumerate(notebook.cells) if "raise NotImplementedError(" in c.source)
    with pytest.raises(CellExecutionError) as stopped:
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    assert "NotImplementedError" in str(stopped.value)
    executed = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.execution_count]
    assert executed[-1] == first_stub, f"stopped at cell {executed[-1]}, the first stub is cell {first_stub}"


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("ray_tune_solution.ipynb", EXPERIMENT)


@pytest.fixture(scope="module")
def parents(client, experiment):
    """The parent run of each strategy."""
    return {s: the_run(client, experiment, f"tags.mlflow.runName = '{s}'") for s in STRATEGIES}


@pytest.fixture(scope="module")
def trials(client, experiment, parents):
    """Trial runs per strategy, nested under the strategy's parent run."""
    return {
        strategy: find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        for strategy, parent in parents.items()
    }



def history(client, run, key="val_accuracy"):
    return metric_steps(client, run.info.run_id, key)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_has_its_trials_nested_with_params_and_histories(client, trials, strategy):
    assert len(trials[strategy]) == TRIALS
    for trial in trials[strategy]:
        assert trial.data.tags["strategy"] == strategy
        assert trial.info.status == "FINISHED"
        assert {"lr", "weight_decay", "hidden_size", "dropout"} <= set(trial.data.params)
        steps = history(client, trial)
        assert steps == list(range(len(steps))) and 1 <= len(steps) <= MAX_EPOCHS, steps


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "pbt"])  # PBT trials copy epochs
def test_mlflow_holds_every_epoch_tune_counted_once(client, parents, trials, strategy):
    logged = sum(len(history(client, trial)) for trial in trials[strategy])
    assert logged == parents[strategy].data.metrics["epochs"]


def test_the_interrupted_random_sweep_was_resumed_without_gaps_or_doubles(client, parents, trials):
    assert int(parents["random"].data.tags["resumed_unfinished_trials"]) > 0, "the sweep was not interrupted"
    for trial in trials["random"]:
        assert history(client, trial) == list(range(MAX_EPOCHS)), trial.info.run_name
        assert history(client, trial, "val_loss") == list(range(MAX_EPOCHS)), trial.info.run_name


def test_asha_stops_some_trials_early(client, trials):
    lengths = sorted(len(history(client, t)) for t in trials["asha"])
    assert lengths[0] < MAX_EPOCHS, f"no ASHA trial stopped early: {lengths}"
    assert lengths[-1] == MAX_EPOCHS, f"no ASHA trial trained to the end: {lengths}"


def test_non_early_stopping_strategies_train_every_trial_to_the_end(client, trials):
    for strategy in ("grid", "random", "optuna-tpe"):
        assert {len(history(client, t)) for t in trials[strategy]} == {MAX_EPOCHS}, strategy


def test_pbt_logs_its_mutable_hyperparameters_per_epoch(client, trials):
    for trial in trials["pbt"]:
        assert history(client, trial, "hp/lr") == history(client, trial), trial.info.run_name


def test_shootout_and_logging_cost_are_logged(client, experiment):
    shootout = the_run(client, experiment, "tags.mlflow.runName = 'shoot-out'")
    artifacts = {a.path for a in client.list_artifacts(shootout.info.run_id)}
    assert {"shootout.json", "best_so_far_vs_epochs.png", "asha_vs_grid.txt"} <= artifacts
    cost = the_run(client, experiment, "tags.mlflow.runName = 'logging-cost'")
    ways = ("no_logging", "MLflowLoggerCallback", "setup_mlflow", "MLflowTrialLogger")
    expected = {f"seconds_{way}" for way in ways}
    assert expected <= set(cost.data.metrics)


def test_tuned_model_is_registered_and_loads(client, experiment):
    version = client.get_model_version_by_alias("digits-tuned", "champion")
    assert client.get_run(version.run_id).info.experiment_id == experiment.experiment_id
    digits = load_digits()
    model = mlflow.pyfunc.load_model("models:/digits-tuned@champion")
    accuracy = (model.predict((digits.data / 16).astype(np.float32)).argmax(1) == digits.target).mean()
    assert accuracy > (0.5 if SMOKE_TEST else 0.98)
