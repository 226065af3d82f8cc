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
CONFIG_PARAMS = {"schedule", "timesteps", "alpha_bar_end", "hidden_size", "depth", "embedding", "lr"}
QUALITY_METRICS = ("mmd_ratio", "swd_ratio", "clipped_share")
ROLES = ("baseline", "tuned")
pytestmark = pytest.mark.slow  # they need what the notebook logged (a whole run of it)


@pytest.fixture(scope="module")
def experiment(notebook_ran):
    return notebook_ran("diffusion.ipynb", EXPERIMENT)


@pytest.fixture(scope="module")
def retrains(client, experiment) -> dict:
    """The newest notebook run's retrains: role -> {training seed: run}."""
    comparison = newest_run(client, experiment, "tags.stage = 'comparison'")
    children = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{comparison.info.run_id}'")
    by_role = {role: {} for role in ROLES}
    for run in children:
        by_role[run.data.tags["role"]][int(run.data.params["training_seed"])] = run
    return by_role


def assert_trained_and_measured(client, run) -> list[int]:
    """One loss per epoch, and the quality metrics (the divergence measure among them) measured together,
    the last time at the last epoch; returns the epochs they were measured at."""
    assert run.info.status == "FINISHED"
    assert CONFIG_PARAMS <= set(run.data.params)
    epochs = int(run.data.params["epochs"])
    assert metric_steps(client, run.info.run_id, "train_loss") == list(range(epochs))
    quality_steps = metric_steps(client, run.info.run_id, "mmd_ratio")
    assert quality_steps and quality_steps[-1] == epochs - 1, quality_steps
    for key in QUALITY_METRICS:
        assert metric_steps(client, run.info.run_id, key) == quality_steps, key
    assert run.data.metrics["mmd_floor"] > 0 and run.data.metrics["swd_floor"] > 0
    assert np.isfinite(run.data.metrics["mmd_ratio"])
    return quality_steps


def test_the_baseline_run_has_params_metric_histories_images_gif_and_a_sampler(client, experiment):
    run = newest_run(client, experiment, "tags.stage = 'baseline'")
    quality_steps = assert_trained_and_measured(client, run)
    assert len(quality_steps) >= 2, "the baseline's quality is measured as it trains"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_history.png", "reverse_process.gif"} <= artifacts, artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert len([p for p in images if p.endswith(".png")]) >= len(quality_steps)
    assert len(logged_models(experiment, run.info.run_id)) == 1


def test_both_configurations_are_retrained_on_the_same_fresh_seeds(client, experiment, retrains):
    tuning = newest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    tuning_seed = int(tuning.data.params["training_seed"])
    seeds = {role: set(runs) for role, runs in retrains.items()}
    assert len(seeds["baseline"]) >= 3 and seeds["baseline"] == seeds["tuned"], seeds
    assert tuning_seed not in seeds["tuned"], "a retrain reused the seed every trial trained with"
    baseline = newest_run(client, experiment, "tags.stage = 'baseline'")
    best = {key.removeprefix("best_"): value for key, value in tuning.data.params.items()}
    expected = {"baseline": baseline.data.params, "tuned": best}
    for role, runs in retrains.items():
        for seed, run in runs.items():
            assert_trained_and_measured(client, run)
            config = {key: run.data.params[key] for key in CONFIG_PARAMS}
            assert config == {key: expected[role][key] for key in CONFIG_PARAMS}, f"{role} seed {seed}"
            assert run.data.metrics["test_repeats"] >= 2
            threshold = float(baseline.data.params["divergence_threshold"])
            assert run.data.metrics["test_clipped_share"] <= threshold, f"{role} seed {seed} diverges"


def test_the_verdict_is_the_paired_difference_over_seeds_and_test_samples(client, experiment, retrains):
    """The comparison's figures follow from what each retrain scored on each test sample: the difference
    tuned - baseline pair by pair (training seed, test sample), its mean and spreads, and the verdict."""
    comparison = newest_run(client, experiment, "tags.stage = 'comparison'").data
    scores = {}
    for role, runs in retrains.items():
        for seed, run in runs.items():
            history = client.get_metric_history(run.info.run_id, "test_sample_mmd_ratio")
            values = [metric.value for metric in history]
            assert len(values) == run.data.metrics["test_repeats"], f"{role} seed {seed}: one per sample"
            assert run.data.metrics["test_mmd_ratio"] == pytest.approx(np.mean(values))
            scores |= {(role, seed, metric.step): metric.value for metric in history}
    scores = pd.Series(scores).unstack(0)  # index: training seed, test sample; columns: roles
    difference = scores.tuned - scores.baseline
    for name, values in (("baseline", scores.baseline), ("tuned", scores.tuned), ("difference", difference)):
        prefix = f"test_{name}_mmd_ratio"
        logged = {key.removeprefix(prefix): value for key, value in comparison.metrics.items()
                  if key.startswith(prefix)}  # fmt: skip
        assert logged[""] == pytest.approx(values.mean()) and logged["_sd"] == pytest.approx(values.std())
        assert logged["_sd_seeds"] == pytest.approx(values.groupby(level=0).mean().std())
        assert logged["_sd_repeats"] == pytest.approx(values.groupby(level=1).mean().std())
    gap, spread = difference.mean(), difference.std()
    clear = abs(gap) > 2 * spread
    expected = "not clearly different" if not clear else "better" if gap < 0 else "worse"
    assert comparison.tags["verdict"] == expected


def test_tuning_trials_search_alpha_bar_end_are_nested_and_the_stopped_ones_killed(client, experiment):
    parent = newest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    trials = find_runs(client, experiment, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == int(parent.data.params["num_trials"])
    assert "results.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    baseline = newest_run(client, experiment, "tags.stage = 'baseline'")
    full_budget = metric_steps(client, baseline.info.run_id, "mmd_ratio")  # the epochs quality is measured at
    for trial in trials:
        name = trial.info.run_name
        assert "ray_trial_id" in trial.data.tags, f"{name} was not logged by the driver-side logger"
        assert CONFIG_PARAMS <= set(trial.data.params)
        assert not {"beta_start", "beta_end"} & set(trial.data.params), "betas mean other things per schedule"
        assert 0 < float(trial.data.params["alpha_bar_end"]) < 1
        steps = metric_steps(client, trial.info.run_id, "mmd_ratio")
        assert steps and steps == full_budget[: len(steps)], f"{name} logged mmd_ratio at epochs {steps}"
        assert metric_steps(client, trial.info.run_id, "clipped_share") == steps, name
        expected = "FINISHED" if steps == full_budget else "KILLED"
        assert trial.info.status == expected, f"{name} ({len(steps)} reports) is {trial.info.status}"
    assert any(trial.info.status == "FINISHED" for trial in trials)


def test_the_aliases_point_at_the_retrains_chosen_on_validation(client, experiment, retrains):
    chosen = {}
    for role, runs in retrains.items():
        best = min(runs.values(), key=lambda run: run.data.metrics["mmd_ratio"])
        assert client.get_model_version_by_alias(MODEL, role).run_id == best.info.run_id, role
        chosen[role] = best
    champion = min(chosen.values(), key=lambda run: run.data.metrics["mmd_ratio"])
    assert client.get_model_version_by_alias(MODEL, "champion").run_id == champion.info.run_id


def test_the_registered_model_states_its_contract(client, experiment):
    limits = mlflow.models.get_model_info(f"models:/{MODEL}@champion").metadata
    assert {"max_rows", "max_samples", "max_work", "clip_range"} <= set(limits), limits
    description = client.get_registered_model(MODEL).description
    for key in ("max_rows", "max_samples", "max_work"):
        assert str(limits[key]) in description, f"the description does not state {key}={limits[key]}"
    signature = mlflow.models.get_model_info(f"models:/{MODEL}@champion").signature
    assert signature.inputs.input_names() == ["num_samples", "seed", "sampler", "steps"]
    assert signature.outputs is not None


def test_ddim_steps_are_chosen_on_validation_and_tested_once(client, experiment):
    tuned = client.get_run(client.get_model_version_by_alias(MODEL, "tuned").run_id)
    timesteps, tolerance = int(tuned.data.params["timesteps"]), float(tuned.data.params["tolerance"])
    curve = client.get_metric_history(tuned.info.run_id, "ddim_validation_mmd_ratio")
    evaluations = [m.step for m in curve]
    assert len(evaluations) >= 2 and evaluations == sorted(evaluations) and evaluations[-1] < timesteps
    assert all(math.isfinite(m.value) and m.value > 0 for m in curve)
    ddpm = client.get_metric_history(tuned.info.run_id, "ddpm_validation_mmd_ratio")
    assert [m.step for m in ddpm] == [timesteps]
    close_enough = [m.step for m in curve if m.value <= tolerance * ddpm[0].value]
    expected = ("ddim", close_enough[0]) if close_enough else ("ddpm", timesteps)
    assert (tuned.data.params["chosen_sampler"], int(tuned.data.params["chosen_steps"])) == expected
    assert len(client.get_metric_history(tuned.info.run_id, "test_chosen_mmd_ratio")) == 1, "the test, once"
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


def share_at_the_clipping_edge(points: np.ndarray, clip_range: float) -> float:
    return float((~np.isfinite(points).all(1) | (np.abs(points) >= clip_range).any(1)).mean())


def test_a_broken_sampler_is_flagged_as_diverging_and_the_champion_is_not(client, experiment, champion):
    """The divergence measure on the served output: the share of points pinned to the clipping edge. The
    champion with its last layer zeroed (a network that predicts no noise) must cross the notebook's
    threshold; the champion itself must not."""
    baseline = newest_run(client, experiment, "tags.stage = 'baseline'")
    threshold = float(baseline.data.params["divergence_threshold"])
    clip_range = champion.metadata.metadata["clip_range"]
    request = pd.DataFrame({"num_samples": [3000], "seed": [11]})
    assert share_at_the_clipping_edge(champion.predict(request), clip_range) <= threshold
    broken = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    network = broken.unwrap_python_model().model
    last_layer = [module for module in network.modules() if isinstance(module, torch.nn.Linear)][-1]
    torch.nn.init.zeros_(last_layer.weight)
    torch.nn.init.zeros_(last_layer.bias)
    share = share_at_the_clipping_edge(broken.predict(request), clip_range)
    assert share > threshold, f"a zero-noise network put {share:.2%} of its points at the edge, not flagged"


def test_champion_refuses_bad_requests_saying_what_is_allowed(champion):
    limits, timesteps = champion.metadata.metadata, champion.model_config["timesteps"]
    five = {"num_samples": [5], "seed": [0]}
    too_many_rows, too_much_work = limits["max_rows"] + 1, limits["max_work"] // timesteps + 1
    bad_requests = [
        ({"num_samples": np.array([], int), "seed": np.array([], int)}, "the table is empty"),
        ({"num_samples": [1] * too_many_rows, "seed": range(too_many_rows)}, f"at most {limits['max_rows']}"),
        ({"num_samples": [limits["max_samples"] // 2 + 1] * 2, "seed": [0, 1], "sampler": ["ddim"] * 2,
          "steps": [1, 1]}, f"at most {limits['max_samples']} per table"),  # fmt: skip
        ({"num_samples": [too_much_work], "seed": [0]}, f"at most {limits['max_work']} per table"),
        ({**five, "num_samples": [0]}, "num_samples must be at least 1, not 0"),
        ({**five, "sampler": ["euler"]}, "sampler must be one of ddpm, ddim, not 'euler'"),
        ({**five, "sampler": ["ddim"], "steps": [0]}, "steps must be from 1 to"),
        ({**five, "sampler": ["ddim"], "steps": [timesteps + 1]}, "steps must be from 1 to"),
        ({**five, "steps": [1]}, "(all) for ddpm"),
    ]
    for request, message in bad_requests:
        with pytest.raises(MlflowException) as raised:
            champion.predict(pd.DataFrame(request))
        assert message in raised.value.message, raised.value.message


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
