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
CHAMPION = f"models:/{MODEL}@champion"
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
SMOKE_TEST = os.environ.get("SMOKE_TEST") == "1"
MIN_ACCURACY = 0.8 if SMOKE_TEST else 0.97


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("mlflow_tracking.ipynb", EXPERIMENT)


def dataset_digest(run, context: str) -> str:
    [digest] = [d.dataset.digest for d in run.inputs.dataset_inputs if d.tags[0].value == context]
    return digest


def validation_metrics(model) -> dict:
    """A logged model's metrics measured on the validation set, by key."""
    return {m.key: m for m in model.metrics if m.dataset_name == "digits-validation"}


def validation_score(model) -> tuple[float, float]:
    """The notebook's champion rule: higher validation accuracy, then lower validation loss."""
    metrics = validation_metrics(model)
    return metrics["val_accuracy"].value, -metrics["val_loss"].value


def scored_models(experiment) -> list:
    """Every logged model of the experiment with validation metrics (the champion's candidates)."""
    models = mlflow.search_logged_models(experiment_ids=[experiment.experiment_id], output_format="list")
    return [m for m in models if "val_accuracy" in validation_metrics(m)]


def champion_model():
    return mlflow.get_logged_model(mlflow.models.get_model_info(CHAMPION).model_id)


def test_experiment_has_a_description(experiment):
    assert "digits" in experiment.tags.get("mlflow.note.content", "")


def test_baseline_run_has_params_tags_and_datasets(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    assert run.info.run_name == "baseline"
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.note.content"], "the run has no description"
    assert set(run.data.params) == {"hidden_size", "dropout", "lr", "weight_decay", "batch_size", "epochs"}
    datasets = {d.dataset.name: d.tags[0].value for d in run.inputs.dataset_inputs}
    assert datasets == {"digits-train": "training", "digits-validation": "validation"}


def test_baseline_run_has_per_epoch_and_system_metrics(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    epochs = int(run.data.params["epochs"])
    for key in EPOCH_METRICS:
        assert metric_steps(client, run.info.run_id, key) == list(range(1, epochs + 1)), key
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


def test_baseline_checkpoints_are_logged_models_with_linked_metrics(client, experiment):
    run = the_run(client, experiment, "tags.stage = 'baseline'")
    epochs = int(run.data.params["epochs"])
    checkpoints = run.outputs.model_outputs
    assert 2 <= len(checkpoints) <= 5, f"{len(checkpoints)} checkpoints: a handful, not one per epoch"
    assert len({c.step for c in checkpoints}) == len(checkpoints), "two checkpoints share a step"
    val_accuracy = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    for checkpoint in checkpoints:
        model = mlflow.get_logged_model(checkpoint.model_id)
        assert model.source_run_id == run.info.run_id
        assert 1 <= checkpoint.step <= epochs
        linked = validation_metrics(model)
        assert {"val_accuracy", "val_loss"} <= set(linked), f"{model.name} has no validation metrics"
        assert linked["val_accuracy"].dataset_digest == dataset_digest(run, "validation")
        assert linked["val_accuracy"].step == checkpoint.step
        assert linked["val_accuracy"].value == val_accuracy[checkpoint.step]


def test_sweep_children_are_nested_and_log_a_checkpoint(client, experiment):
    parent = the_run(client, experiment, "tags.mlflow.runName = 'sweep'")
    children = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) >= 2
    for child in children:
        epochs = int(child.data.params["epochs"])
        assert metric_steps(client, child.info.run_id, "val_accuracy") == list(range(1, epochs + 1))
        models = logged_models(experiment, child.info.run_id)
        assert len(models) == 1, f"{child.info.run_name} logged {len(models)} models"
        assert "val_accuracy" in validation_metrics(models[0])


def test_champion_is_the_best_model_and_each_version_beat_the_last(client, experiment):
    best = max(validation_score(m) for m in scored_models(experiment))
    assert validation_score(champion_model()) == best
    versions = sorted(client.search_model_versions(f"name = '{MODEL}'"), key=lambda v: int(v.version))
    scores = [validation_score(mlflow.get_logged_model(v.source.removeprefix("models:/"))) for v in versions]
    assert scores == sorted(set(scores)), f"a version was registered without beating the champion: {scores}"
    assert client.get_model_version_by_alias(MODEL, "champion").version == versions[-1].version


def test_champion_answers_with_the_digit_and_its_probabilities(experiment):
    model = mlflow.pyfunc.load_model(CHAMPION)
    outputs = model.metadata.signature.outputs.to_dict()
    assert [o["name"] for o in outputs] == ["digit", "probabilities"], outputs
    digits = load_digits()
    answers = model.predict((digits.data / 16.0).astype(np.float32))
    probabilities = np.stack(answers["probabilities"])
    assert probabilities.shape == (len(digits.target), 10)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    assert (probabilities.argmax(1) == answers["digit"]).all()
    assert (answers["digit"] == digits.target).mean() > MIN_ACCURACY


def test_evaluation_metrics_are_attached_to_the_champion(client, experiment):
    run = the_run(client, experiment, "tags.mlflow.runName = 'evaluate-champion'")
    for key in ("accuracy_score", "f1_score", "precision_score", "recall_score"):
        assert key in run.data.metrics, key
    assert run.data.metrics["accuracy_score"] >= MIN_ACCURACY
    assert any("confusion_matrix" in a.path for a in client.list_artifacts(run.info.run_id))
    champion = champion_model()
    model_inputs = client.get_run(run.info.run_id).inputs.model_inputs  # search results leave them out
    assert [m.model_id for m in model_inputs] == [champion.model_id]
    test_metrics = {m.key: m.value for m in champion.metrics if m.dataset_name == "digits-test"}
    assert test_metrics.get("accuracy_score") == run.data.metrics["accuracy_score"]


def test_autolog_run_records_params_metrics_dataset_and_model(client, experiment):
    run = the_run(client, experiment, "tags.mlflow.runName = 'sklearn-autolog'")
    assert {"C", "max_iter", "solver"} <= set(run.data.params)
    assert run.data.metrics["training_accuracy_score"] > 0.9
    assert "LogisticRegression_score_X_val" in run.data.metrics
    assert [d.tags[0].value for d in run.inputs.dataset_inputs] == ["train"]
    models = logged_models(experiment, run.info.run_id)
    assert len(models) == 1


def test_running_twice_moves_the_champion_only_to_a_better_model(client, experiment):
    before = client.get_model_version_by_alias(MODEL, "champion")
    versions_before = len(client.search_model_versions(f"name = '{MODEL}'"))
    best_before = max(validation_score(m) for m in scored_models(experiment))
    runs_before = len(find_runs(client, experiment, ""))
    execute_notebook(REPO / "mlflow_tracking.ipynb")
    best_after = max(validation_score(m) for m in scored_models(experiment))
    assert validation_score(champion_model()) == best_after
    if best_after == best_before:  # nothing better came (seeded training repeats itself): no new version
        assert client.get_model_version_by_alias(MODEL, "champion").version == before.version
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == versions_before
    assert len(find_runs(client, experiment, "")) == 2 * runs_before
