"""The Ray Tune notebooks. The exercise is generated from the solution and stops at its first stub.
The solution runs once, cell by cell (the walk): each TODO's self-check must fail on the exercise's
stub and on a plausible wrong answer (tests/wrong_answers.py), and pass on the solution. Then the
tests read back from MLflow what that run logged, with the budgets the notebook logged itself."""

import json
from pathlib import Path

import mlflow
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.runs import find_runs, metric_steps, newest_run
from tests.wrong_answers import wrong_answers
from tools import make_exercise
from tools.notebooks import kernel, walk_solution

EXPERIMENT = "ray-tune-lab"
SOLUTION = nbformat.read(make_exercise.SOLUTION, as_version=4)
TODOS = [f"todo-{k}" for k in range(1, len(make_exercise.todo_pairs(SOLUTION)) + 1)]


# --- the exercise --------------------------------------------------------------------------------


def test_exercise_is_generated_from_the_current_solution():
    assert make_exercise.main(["--check"]) == 0, "run `make exercise`"


def test_the_exercise_has_five_to_seven_todos_each_a_stub_with_its_self_check_next():
    exercise = make_exercise.make_exercise(SOLUTION)
    assert 5 <= len(TODOS) <= 7
    tags = [cell.metadata.get("tags") for cell in SOLUTION.cells]
    assert [cell.metadata.get("tags") for cell in exercise.cells] == tags, "the tags stay in place"
    for todo, _ in make_exercise.todo_pairs(SOLUTION):
        assert exercise.cells[todo].source.count("raise NotImplementedError(") == 1
    assert "(exercise)" in exercise.cells[0].source
    assert not any("### " in c.source for c in exercise.cells if c.cell_type == "code")


def test_drift_is_detected(tmp_path, monkeypatch):
    stale = tmp_path / "ray_tune.ipynb"
    stale.write_text(make_exercise.EXERCISE.read_text().replace("TODO", "TO DO", 1))
    monkeypatch.setattr(make_exercise, "EXERCISE", stale)
    assert make_exercise.main(["--check"]) == 1


def small_solution(*cells) -> nbformat.NotebookNode:
    """A notebook of (source, tags) code cells."""
    notebook = nbformat.v4.new_notebook()
    for source, tags in cells:
        notebook.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)}))
    return notebook


TODO = "x = 1\n### BEGIN SOLUTION: set y\ny = 2\n### END SOLUTION"


@pytest.mark.parametrize(
    "cells, message",
    [
        ([(TODO, ["todo-1"]), ("assert y == 2", [])], "every todo-<k> needs one check-<k>"),
        ([(TODO, []), ("assert y == 2", ["check-1"])], "has a SOLUTION region but no todo-<k> tag"),
        ([(TODO, ["todo-2"]), ("assert y == 2", ["check-2"])], "should number 1, 2, ..."),
        ([(TODO, ["todo-1"]), ("pass", []), ("assert y == 2", ["check-1"])], "right after todo-1"),
        ([(TODO + "\n" + TODO, ["todo-1"]), ("assert y", ["check-1"])], "exactly one SOLUTION region"),
        ([("### BEGIN SOLUTION: y\ny = 2", ["todo-1"]), ("assert y", ["check-1"])], "unbalanced"),
        (
            [(TODO, ["todo-2"]), ("pass", ["check-2"]), (TODO, ["todo-1"]), ("pass", ["check-1"])],
            "out of order",
        ),
    ],
)
def test_the_generator_refuses_a_solution_with_wrong_tags(cells, message):
    with pytest.raises(make_exercise.SolutionError, match=message):
        make_exercise.make_exercise(small_solution(*cells))


def test_exercise_runs_cleanly_up_to_its_first_stub(mlflow_server):
    notebook = nbformat.read(make_exercise.EXERCISE, as_version=4)
    first_stub = next(i for i, c in enumerate(notebook.cells) if "raise NotImplementedError(" in c.source)
    with pytest.raises(CellExecutionError) as stopped:
        NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    assert "NotImplementedError" in str(stopped.value)
    executed = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.execution_count]
    assert executed[-1] == first_stub, f"stopped at cell {executed[-1]}, the first stub is cell {first_stub}"


# --- the walk: one smoke run of the solution, cell by cell ----------------------------------------


@pytest.fixture(scope="module")
def walk(mlflow_server):
    """The solution run cell by cell in one kernel, each TODO tried with its stub and a wrong answer
    first (tools.notebooks.walk_solution); the MLflow tests below read what this run logged."""
    with kernel() as run:
        todos, cells = walk_solution(make_exercise.SOLUTION, make_exercise.EXERCISE, wrong_answers(), run)
    return {todo.todo: todo for todo in todos}, cells


def test_the_solution_runs_cell_by_cell_without_an_error(walk):
    _, cells = walk
    failed = cells[-1]
    assert not failed.error, f"a cell of the solution failed: {failed.error}\n{failed.source[:400]}"


@pytest.mark.parametrize("todo", TODOS)
def test_the_self_check_fails_on_the_stub(walk, todo):
    outcome = walk[0][todo].after_stub
    assert outcome.error_name in ("NotImplementedError", "AssertionError"), outcome.error or "it passed"


@pytest.mark.parametrize("todo", TODOS)
def test_the_self_check_says_what_is_wrong_with_a_plausible_wrong_answer(walk, todo):
    outcome = walk[0][todo].after_wrong_answer
    assert outcome.error_name == "AssertionError", outcome.error or "it passed"
    assert len(outcome.error_value) > 20, f"the message should say what is wrong: {outcome.error_value!r}"


@pytest.mark.parametrize("todo", TODOS)
def test_the_self_check_passes_on_the_solution(walk, todo):
    outcome = walk[0][todo].after_solution
    assert outcome is not None, "the walk stopped before it"
    assert not outcome.error, outcome.error
    assert any("OK" in output.get("text", "") for output in outcome.outputs), "the self-check should say OK"


# --- what the run logged to MLflow --------------------------------------------------------------


@pytest.fixture(scope="module")
def experiment(walk, client):
    return client.get_experiment_by_name(EXPERIMENT)


def sweep(client, experiment, strategy: str) -> tuple:
    """The parent run of the strategy's newest sweep, and its trial runs."""
    parent = newest_run(client, experiment, f"tags.strategy = '{strategy}'")
    return parent, find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


@pytest.fixture(scope="module")
def shootout(client, experiment):
    run = newest_run(client, experiment, "tags.mlflow.runName = 'shoot-out'")
    strategies = run.data.params["strategies"].split(",")
    return {strategy: sweep(client, experiment, strategy) for strategy in strategies}


def history(client, run, key="val_accuracy") -> list[int]:
    return metric_steps(client, run.info.run_id, key)


def test_the_shootout_has_five_strategies_each_with_its_budget_logged(shootout):
    assert set(shootout) == {"grid", "random", "asha", "optuna-tpe", "pbt"}
    budgets = {(int(p.data.metrics["trials"]), p.data.params["max_epochs"]) for p, _ in shootout.values()}
    assert len(budgets) == 1, f"the strategies had different budgets: {budgets}"


def test_each_strategy_nests_its_trials_with_params_and_histories(client, shootout):
    for strategy, (parent, trials) in shootout.items():
        assert len(trials) == parent.data.metrics["trials"], strategy
        max_epochs = int(parent.data.params["max_epochs"])
        for trial in trials:
            assert trial.info.status == "FINISHED", f"{strategy}: {trial.info.run_name} {trial.info.status}"
            assert {"lr", "weight_decay", "hidden_size", "dropout"} <= set(trial.data.params), strategy
            steps = history(client, trial)
            assert 1 <= len(steps) <= max_epochs and steps == sorted(set(steps)), (strategy, steps)


@pytest.mark.parametrize("strategy", ["grid", "random", "asha", "optuna-tpe"])
def test_the_epochs_a_strategy_spent_are_the_epochs_its_trials_logged(client, shootout, strategy):
    parent, trials = shootout[strategy]
    assert sum(len(history(client, trial)) for trial in trials) == parent.data.metrics["epochs"]


def test_pbt_counts_every_epoch_its_trials_trained(client, shootout):
    """Each epoch a PBT trial logged is one it trained; after an exploit it may train some twice (which
    it logs once), so the sweep's count is at least what its trials logged."""
    parent, trials = shootout["pbt"]
    assert parent.data.metrics["epochs"] >= sum(len(history(client, trial)) for trial in trials)


def test_asha_stops_some_trials_early_and_trains_some_to_the_end(client, shootout):
    parent, trials = shootout["asha"]
    lengths = sorted(len(history(client, trial)) for trial in trials)
    max_epochs = int(parent.data.params["max_epochs"])
    assert lengths[0] < max_epochs and lengths[-1] == max_epochs, lengths


def test_the_strategies_that_do_not_stop_early_train_every_trial_to_the_end(client, shootout):
    for strategy in ("grid", "random", "optuna-tpe"):
        parent, trials = shootout[strategy]
        assert {len(history(client, t)) for t in trials} == {int(parent.data.params["max_epochs"])}, strategy


def test_pbt_logs_each_trials_hyperparameters_at_every_step(client, shootout):
    _, trials = shootout["pbt"]
    for trial in trials:
        assert history(client, trial, "config/lr") == history(client, trial), trial.info.run_name


def test_the_first_sweep_is_logged_by_rays_callback_nested_under_its_parent(client, experiment):
    parent, trials = sweep(client, experiment, "first-sweep")
    assert parent.data.params["logger"] == "MLflowLoggerCallback"
    assert len(trials) == parent.data.metrics["trials"] == int(parent.data.params["num_samples"])
    for trial in trials:
        assert "time_this_iter_s" in trial.data.metrics, "Ray's callback logs Tune's bookkeeping too"
        assert len(history(client, trial)) == int(parent.data.params["max_epochs"])


def test_the_resumed_sweep_has_one_run_per_trial_holding_tunes_final_results(client, experiment):
    parent, trials = sweep(client, experiment, "resume-demo")
    assert int(parent.data.tags["unfinished_trials"]) > 0, "the sweep was not interrupted"
    reported = tune_results(Path(parent.data.tags["tune_experiment_path"]))
    assert sorted(t.data.tags["ray_trial_id"] for t in trials) == sorted(reported), "one MLflow run per trial"
    repeated = 0
    for trial in trials:
        reports = reported[trial.data.tags["ray_trial_id"]]
        last_of_each_epoch = {report["training_iteration"]: report["val_accuracy"] for report in reports}
        repeated += len(reports) - len(last_of_each_epoch)
        logged = client.get_metric_history(trial.info.run_id, "val_accuracy")
        assert {m.step: m.value for m in logged} == last_of_each_epoch, trial.info.run_name
        assert trial.info.status == "FINISHED"
    assert repeated > 0, "no trial repeated an epoch after the resume: the comparison proves little"


def tune_results(experiment_path: Path) -> dict[str, list[dict]]:
    """Every report of every trial, as Tune wrote them to the trial folders' result.json."""
    reports = {}
    for path in experiment_path.glob("*/result.json"):
        for line in path.read_text().splitlines():
            report = json.loads(line)
            reports.setdefault(report["trial_id"], []).append(report)
    return reports


def test_shootout_and_logging_cost_are_logged(client, experiment):
    shootout = newest_run(client, experiment, "tags.mlflow.runName = 'shoot-out'")
    artifacts = {a.path for a in client.list_artifacts(shootout.info.run_id)}
    assert {"shootout.json", "best_so_far_vs_epochs.png", "asha_vs_grid.txt"} <= artifacts
    cost = newest_run(client, experiment, "tags.mlflow.runName = 'logging-cost'")
    ways = ("no_logging", "MLflowLoggerCallback", "setup_mlflow", "BatchedMLflowLoggerCallback")
    assert {f"seconds_{way}" for way in ways} <= set(cost.data.metrics)


def test_the_tuned_model_is_registered_and_loads(client, experiment):
    version = client.get_model_version_by_alias("digits-tuned", "champion")
    run = client.get_run(version.run_id)
    assert run.info.experiment_id == experiment.experiment_id
    model = mlflow.pyfunc.load_model("models:/digits-tuned@champion")
    assert model.metadata.get_input_schema() is not None
    assert 0 < run.data.metrics["test_accuracy"] <= 1
