"""What diffusion.ipynb leaves on the tracking server, read back with MlflowClient, and its registered
sampler loaded in this process."""

import math
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from tests.runs import find_runs, logged_models, metric_steps, newest_run

EXPERIMENT = "diffusion-lab"
MODEL = "tiny-diffusion"
TUNED_PARAMS = {"schedule", "timesteps", "beta_start", "beta_end", "hidden_size", "depth", "embedding", "lr"}
QUALITY_METRICS = ("mmd_ratio", "swd_ratio", "far_share")


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("diffusion.ipynb", EXPERIMENT)


@pytest.mark.parametrize("stage", ["baseline", "tuned"])
def test_trained_runs_have_params_and_metric_histories(client, experiment, stage):
    run = newest_run(client, experiment, f"tags.stage = '{stage}'")
    assert run.info.status == "FINISHED"
    assert TUNED_PARAMS <= set(run.data.params)
    epochs = int(run.data.params["epochs"])
    assert metric_steps(client, run.info.run_id, "train_loss") == list(range(epochs))
    quality_steps = metric_steps(client, run.info.run_id, "mmd_ratio")
    assert len(quality_steps) >= 2 and quality_steps[-1] == epochs - 1, quality_steps
    for key in QUALITY_METRICS:
        assert metric_steps(client, run.info.run_id, key) == quality_steps, key
    assert run.data.metrics["mmd_floor"] > 0 and run.data.metrics["swd_floor"] > 0
    assert np.isfinite(run.data.metrics["mmd_ratio"])


@pytest.mark.parametrize("stage", ["baseline", "tuned"])
def test_trained_runs_have_sample_images_gif_and_a_sampler(client, experiment, stage):
    run = newest_run(client, experiment, f"tags.stage = '{stage}'")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_history.png", "reverse_process.gif"} <= artifacts, artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    quality_steps = metric_steps(client, run.info.run_id, "mmd_ratio")
    assert len([p for p in images if p.endswith(".png")]) >= len(quality_steps), images
    models = logged_models(experiment, run.info.run_id)
    assert len(models) == 1


@pytest.mark.parametrize("stage", ["baseline", "tuned"])
def test_trained_runs_are_judged_on_repeated_test_samples(client, experiment, stage):
    metrics = newest_run(client, experiment, f"tags.stage = '{stage}'").data.metrics
    assert metrics["test_repeats"] >= 2
    for key in ("mmd_ratio", "swd_ratio"):
        assert metrics[f"test_{key}"] > 0 and metrics[f"test_{key}_sd"] >= 0, key
    assert metrics["test_far_share"] == 0, "the sampler put points far outside the data"


def test_tuning_trials_are_nested_and_the_stopped_ones_killed(client, experiment):
    parent = newest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    trials = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == int(parent.data.params["num_trials"])
    assert "results.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    tuned = newest_run(client, experiment, "tags.stage = 'tuned'")
    full_budget = metric_steps(client, tuned.info.run_id, "mmd_ratio")  # the epochs quality is measured at
    for trial in trials:
        name = trial.info.run_name
        assert "ray_trial_id" in trial.data.tags, f"{name} was not logged by the driver-side logger"
        assert TUNED_PARAMS <= set(trial.data.params)
        steps = metric_steps(client, trial.info.run_id, "mmd_ratio")
        assert steps and steps == full_budget[: len(steps)], f"{name} logged mmd_ratio at epochs {steps}"
        expected = "FINISHED" if steps == full_budget else "KILLED"
        assert trial.info.status == expected, f"{name} ({len(steps)} reports) is {trial.info.status}"
    assert any(trial.info.status == "FINISHED" for trial in trials)


def test_aliases_point_at_the_baseline_tuned_and_best_on_validation(client, experiment):
    baseline = newest_run(client, experiment, "tags.stage = 'baseline'")
    tuned = newest_run(client, experiment, "tags.stage = 'tuned'")
    assert client.get_model_version_by_alias(MODEL, "baseline").run_id == baseline.info.run_id
    assert client.get_model_version_by_alias(MODEL, "tuned").run_id == tuned.info.run_id
    best = min((baseline, tuned), key=lambda run: run.data.metrics["mmd_ratio"])
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == best.info.run_id
    assert "num_samples (1 to 100000)" in client.get_registered_model(MODEL).description


def test_ddim_quality_is_logged_by_network_evaluations(client, experiment):
    tuned = newest_run(client, experiment, "tags.stage = 'tuned'")
    timesteps = int(tuned.data.params["timesteps"])
    curve = client.get_metric_history(tuned.info.run_id, "ddim_test_mmd_ratio")
    evaluations = [m.step for m in curve]
    assert len(evaluations) >= 2 and evaluations == sorted(evaluations) and evaluations[-1] <= timesteps
    assert all(math.isfinite(m.value) and m.value > 0 for m in curve)
    assert metric_steps(client, tuned.info.run_id, "ddpm_test_mmd_ratio") == [timesteps]
    assert "ddim_quality_vs_steps.png" in {a.path for a in client.list_artifacts(tuned.info.run_id)}


@pytest.fixture(scope="module")
def champion(experiment):
    return mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")


def test_champion_loads_from_the_registry_and_draws_samples(champion):
    samples = champion.predict(pd.DataFrame({"num_samples": [120, 80], "seed": [0, 1]}))
    assert samples.shape == (200, 2)
    assert np.isfinite(samples).all()
    again = champion.predict(pd.DataFrame({"num_samples": [120], "seed": [0]}))
    np.testing.assert_allclose(again, samples[:120], atol=1e-6)
    typical_size = np.median(np.abs(samples))  # robust: a barely trained (smoke) model has outliers
    assert 0.1 < typical_size < 2, f"samples of unit-scale data have a typical size of {typical_size:.2f}"


def test_champion_draws_with_ddim_deterministically(champion):
    request = pd.DataFrame({"num_samples": [100, 50], "seed": [3, 3], "sampler": ["ddim", "ddim"]})
    request["steps"] = 5
    first, second = champion.predict(request), champion.predict(request)
    assert first.shape == (150, 2)
    np.testing.assert_array_equal(first, second)


FIVE = {"num_samples": [5], "seed": [0]}


@pytest.mark.parametrize(
    ("request_columns", "message"),
    [
        ({**FIVE, "num_samples": [0]}, "num_samples must be 1 to 100000, not 0"),
        ({**FIVE, "num_samples": [100_001]}, "num_samples must be 1 to 100000"),
        ({**FIVE, "sampler": ["euler"]}, "sampler must be one of ddpm, ddim, not 'euler'"),
        ({**FIVE, "sampler": ["ddim"], "steps": [0]}, "steps must be from 1 to"),
        ({**FIVE, "sampler": ["ddim"], "steps": [100_000]}, "steps must be from 1 to"),
        ({**FIVE, "steps": [1]}, "(all) for ddpm"),
    ],
)
def test_champion_rejects_bad_requests_saying_what_is_allowed(champion, request_columns, message):
    with pytest.raises(MlflowException) as raised:
        champion.predict(pd.DataFrame(request_columns))
    assert message in raised.value.message


def test_the_sampler_chooses_its_device_when_loaded(champion, tmp_path):
    """The pickled sampler holds no network, weights or device: load_context builds them where it loads."""
    path = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path)))
    with open(path / "python_model.pkl", "rb") as file:
        pickled = cloudpickle.load(file)
    torch_objects = (torch.device, torch.nn.Module, torch.Tensor)
    carried = [name for name, value in vars(pickled).items() if isinstance(value, torch_objects)]
    assert not carried, f"the pickled sampler carries {carried}"
    here = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert champion.unwrap_python_model().device == here
