"""What diffusion.ipynb leaves on the tracking server, read back with MlflowClient."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.runs import find_runs, logged_models, metric_steps

EXPERIMENT = "diffusion-lab"
MODEL = "tiny-diffusion"
TUNED_PARAMS = {"schedule", "timesteps", "beta_start", "beta_end", "hidden_size", "depth", "embedding", "lr"}


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("diffusion.ipynb", EXPERIMENT)


def latest_run(client, experiment, filter_string):
    """The newest matching run (the notebook may have run more than once against this server)."""
    runs = find_runs(client, experiment, filter_string)
    assert runs, f"no run matches {filter_string!r}"
    return max(runs, key=lambda run: run.info.start_time)


@pytest.mark.parametrize("stage", ["baseline", "tuned"])
def test_trained_runs_have_params_and_metric_histories(client, experiment, stage):
    run = latest_run(client, experiment, f"tags.stage = '{stage}'")
    assert run.info.status == "FINISHED"
    assert TUNED_PARAMS <= set(run.data.params)
    epochs = int(run.data.params["epochs"])
    assert metric_steps(client, run.info.run_id, "train_loss") == list(range(epochs))
    quality_steps = metric_steps(client, run.info.run_id, "mmd_ratio")
    assert len(quality_steps) >= 2 and quality_steps[-1] == epochs - 1, quality_steps
    assert run.data.metrics["mmd_floor"] > 0
    assert np.isfinite(run.data.metrics["mmd_ratio"])


@pytest.mark.parametrize("stage", ["baseline", "tuned"])
def test_trained_runs_have_sample_images_gif_and_a_sampler(client, experiment, stage):
    run = latest_run(client, experiment, f"tags.stage = '{stage}'")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_history.png", "reverse_process.gif"} <= artifacts, artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    quality_steps = metric_steps(client, run.info.run_id, "mmd_ratio")
    assert len([p for p in images if p.endswith(".png")]) >= len(quality_steps), images
    models = logged_models(experiment, run.info.run_id)
    assert len(models) == 1


def test_tuning_trials_are_nested_and_logged(client, experiment):
    parent = latest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    trials = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == int(parent.data.params["num_trials"])
    assert "results.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    for trial in trials:
        assert trial.info.status == "FINISHED", f"{trial.info.run_name} is {trial.info.status}"
        assert TUNED_PARAMS <= set(trial.data.params)
        assert metric_steps(client, trial.info.run_id, "mmd_ratio"), f"{trial.info.run_name} has no mmd_ratio"
        assert client.list_artifacts(trial.info.run_id, "images"), f"{trial.info.run_name} has no images"


def test_aliases_point_at_the_baseline_tuned_and_best_runs(client, experiment):
    baseline = latest_run(client, experiment, "tags.stage = 'baseline'")
    tuned = latest_run(client, experiment, "tags.stage = 'tuned'")
    assert client.get_model_version_by_alias(MODEL, "baseline").run_id == baseline.info.run_id
    assert client.get_model_version_by_alias(MODEL, "tuned").run_id == tuned.info.run_id
    best = min((baseline, tuned), key=lambda run: run.data.metrics["mmd_ratio"])
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == best.info.run_id


def test_champion_loads_from_the_registry_and_draws_samples(experiment):
    sampler = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    samples = sampler.predict(pd.DataFrame({"num_samples": [300, 200], "seed": [0, 1]}))
    assert samples.shape == (500, 2)
    assert np.isfinite(samples).all()
    again = sampler.predict(pd.DataFrame({"num_samples": [300], "seed": [0]}))
    np.testing.assert_allclose(again, samples[:300], atol=1e-6)
    typical_size = np.median(np.abs(samples))  # robust: a barely trained (smoke) model has outliers
    assert 0.1 < typical_size < 2, f"samples of unit-scale data have a typical size of {typical_size:.2f}"
