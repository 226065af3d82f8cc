"""What mlflow_tracking.ipynb leaves on the tracking server, read back with MlflowClient."""

import os

import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.runs import find_runs, logged_models, metric_steps, the_run
from tools import REPO
from tools.notebooks import execute_notebook

EXPERIMENT = "mlflow-tracking-lab"
MODEL = "digits-classifier"
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("mlflow_tracking.ipynb", EXPERIMENT)


def test_experiment_has_a_description(experiment):
    assert "digits" in experiment.tags.get("mlflow.note.content", "")


def test_baseline_run_has_params_tags_and_datasets(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    assert run.info.run_name == "baseline"
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.note.content"], "the run has no description"
    assert set(run.data.params) == {"hidden_size", "dropout", "lr", "weight_decay", "batch_size", "epochs"}
    assert run.data.params["epochs"] == ("5" if SMOKE_TEST else "40")
    datasets = {d.dataset.name: d.tags[0].value for d in run.inputs.dataset_inputs}
    assert datasets == {"digits-train": "training", "digits-validation": "validation"}


def test_baseline_run_has_per_epoch_and_system_metrics(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    epochs = int(run.data.params["epochs"])
    for key in EPOCH_METRICS:
        assert metric_steps(client, run.info.run_id, key) == list(range(epochs)), key
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert losses[-1] < losses[0], "the training loss did not go down"
    assert "system/cpu_utilization_percentage" in run.data.metrics


def test_baseline_run_has_artifacts(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "learning_curves.png",
        "confusion_matrix.png",
        "misclassified_digits.png",
        "validation_predictions.json",
    } <= artifacts


def test_sweep_children_are_nested_and_log_models(client, experiment):
    parent = the_run(client, experiment, "tags.mlflow.runName = 'sweep'")
    children = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == (2 if SMOKE_TEST else 4)
    for child in children:
        epochs = int(child.data.params["epochs"])
        assert metric_steps(client, child.info.run_id, "val_accuracy") == list(range(epochs))
        models = logged_models(experiment, child.info.run_id)
        assert len(models) == 1, f"{child.info.run_name} logged {len(models)} models"


def test_champion_alias_points_at_the_best_validation_run(client, experiment):
    champion = client.get_model_version_by_alias(MODEL, "champion")
    candidates = find_runs(client, experiment, "metrics.val_accuracy > 0")  # baseline and sweep children
    best = max(r.data.metrics["val_accuracy"] for r in candidates)
    assert client.get_run(champion.run_id).data.metrics["val_accuracy"] == best


def test_champion_loads_from_the_registry_and_predicts_digits(experiment):
    digits = load_digits()
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    logits = model.predict((digits.data / 16.0).astype(np.float32))
    assert logits.shape == (len(digits.target), 10)
    assert (logits.argmax(1) == digits.target).mean() > (0.8 if SMOKE_TEST else 0.97)


def test_evaluation_run_logs_classifier_metrics_and_plots(client, experiment):
    run = the_run(client, experiment, "tags.mlflow.runName = 'evaluate-champion'")
    for key in ("accuracy_score", "f1_score", "precision_score", "recall_score"):
        assert key in run.data.metrics, key
    assert run.data.metrics["accuracy_score"] >= (0.8 if SMOKE_TEST else 0.97)
    assert any("confusion_matrix" in a.path for a in client.list_artifacts(run.info.run_id))


def test_autolog_run_records_params_metrics_and_model(client, experiment):
    run = the_run(client, experiment, "tags.mlflow.runName = 'sklearn-autolog'")
    assert {"C", "max_iter", "solver"} <= set(run.data.params)
    assert run.data.metrics["training_accuracy_score"] > 0.9
    models = logged_models(experiment, run.info.run_id)
    assert len(models) == 1


def test_running_twice_adds_a_version_and_moves_the_alias(client, experiment):
    before = client.get_model_version_by_alias(MODEL, "champion")
    runs_before = len(find_runs(client, experiment, ""))
    execute_notebook(REPO / "mlflow_tracking.ipynb")
    after = client.get_model_version_by_alias(MODEL, "champion")
    assert int(after.version) > int(before.version)
    assert len(find_runs(client, experiment, "")) == 2 * runs_before
