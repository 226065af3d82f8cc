"""What diffusion.ipynb leaves on the tracking server, read back with MlflowClient, and its registered
sampler loaded in this process. The notebook prints its outcomes and asserts only its workflow; the ranges
its outcomes fall in on this lab's machine are asserted here."""

import math
import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from labkit import stats
from tests.runs import find_runs, logged_models, metric_steps, newest_run

EXPERIMENT = "diffusion-lab"
MODEL = "tiny-diffusion"
CONFIG_PARAMS = {"schedule", "timesteps", "alpha_bar_end", "hidden_size", "depth", "embedding", "lr"}
QUALITY_METRICS = ("mmd_ratio", "swd_ratio", "clipped_share")
ROLES = ("baseline", "tuned")
WEIGHTS = {"last": "test_sample_mmd_ratio", "ema": "test_ema_sample_mmd_ratio"}  # each test sample's score
FULL_MODE = os.environ.get("SMOKE_TEST") == "0"
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


@pytest.fixture(scope="module")
def test_scores(client, retrains) -> pd.DataFrame:
    """Each retrain's score on each test sample, with its last weights and with their moving average:
    index (training seed, test sample), columns (role, weights)."""
    scores = {}
    for role, runs in retrains.items():
        for seed, run in runs.items():
            for weights, key in WEIGHTS.items():
                history = client.get_metric_history(run.info.run_id, key)
                assert len(history) == run.data.metrics["test_repeats"], f"{role} seed {seed}: one per sample"
                scores |= {(role, weights, seed, m.step): m.value for m in history}
    return pd.Series(scores).unstack([0, 1])


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


def pictures(client, run_id: str) -> list[str]:
    """The images a run logged with mlflow.log_image (key and step)."""
    return [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]


def test_the_baseline_run_has_params_metric_histories_images_a_gif_and_trajectories(client, experiment):
    run = newest_run(client, experiment, "tags.stage = 'baseline'")
    quality_steps = assert_trained_and_measured(client, run)
    assert len(quality_steps) >= 2, "the baseline's quality is measured as it trains"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    expected = {"training_history.png", "samples_vs_data.png", "reverse_process.gif", "trajectories.png"}
    assert expected <= artifacts, artifacts
    assert len(pictures(client, run.info.run_id)) >= len(quality_steps)
    assert not logged_models(experiment, run.info.run_id), "the baseline run registers no sampler now"


def test_both_configurations_are_retrained_on_the_same_fresh_seeds(client, experiment, retrains):
    tuning = newest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    tuning_seed = int(tuning.data.params["training_seed"])
    seeds = {role: set(runs) for role, runs in retrains.items()}
    assert len(seeds["baseline"]) >= (3 if FULL_MODE else 2) and seeds["baseline"] == seeds["tuned"], seeds
    assert tuning_seed not in seeds["tuned"], "a retrain reused the seed every trial trained with"
    baseline = newest_run(client, experiment, "tags.stage = 'baseline'")
    best = {key.removeprefix("best_"): value for key, value in tuning.data.params.items()}
    expected = {"baseline": baseline.data.params, "tuned": best}
    for role, runs in retrains.items():
        for seed, run in runs.items():
            assert_trained_and_measured(client, run)
            config = {key: run.data.params[key] for key in CONFIG_PARAMS}
            assert config == {key: expected[role][key] for key in CONFIG_PARAMS}, f"{role} seed {seed}"
            assert float(run.data.params["ema_decay"]) < 1
            assert metric_steps(client, run.info.run_id, "ema_mmd_ratio") == [
                int(run.data.params["epochs"]) - 1
            ]
            assert run.data.metrics["test_repeats"] >= 2


@pytest.fixture(scope="module")
def baseline_threshold(client, experiment) -> float:
    return float(
        newest_run(client, experiment, "tags.stage = 'baseline'").data.params["divergence_threshold"]
    )


def test_no_retrain_diverges_on_the_test(baseline_threshold, retrains):
    """An outcome, printed by the notebook: on this machine no retrain, with either weights, puts more than
    the divergence threshold of its points at the clipping edge."""
    for role, runs in retrains.items():
        for seed, run in runs.items():
            for key in ("test_clipped_share", "test_ema_clipped_share"):
                assert run.data.metrics[key] <= baseline_threshold, f"{role} seed {seed} diverges ({key})"


def test_the_verdicts_are_paired_differences_over_crossed_seeds_and_test_samples(
    client, experiment, test_scores
):
    """The comparison's figures follow from what each retrain scored on each test sample, with either
    weights: each mean with its crossed standard error, degrees of freedom and 95% margin (labkit.stats),
    the differences taken pair by pair (training seed, test sample), and each verdict by the lab's rule."""
    comparison = newest_run(client, experiment, "tags.stage = 'comparison'").data
    values = {}
    for weights, suffix in (("last", ""), ("ema", "_ema")):
        values |= {f"{role}{suffix}": test_scores[role, weights] for role in ROLES}
        values[f"difference{suffix}"] = test_scores["tuned", weights] - test_scores["baseline", weights]
    values |= {f"{role}_ema_gain": test_scores[role, "ema"] - test_scores[role, "last"] for role in ROLES}
    for name, scores in values.items():
        estimate = stats.crossed(scores.unstack())
        prefix = f"test_{name}_mmd_ratio"
        logged = {suffix: comparison.metrics[f"{prefix}{suffix}"] for suffix in ("", "_se", "_df", "_margin")}
        assert logged == pytest.approx(
            {
                "": estimate.mean,
                "_se": estimate.standard_error,
                "_df": estimate.df,
                "_margin": estimate.margin,
            }
        ), name
    words = {-1: "better", 1: "worse", 0: "not clearly different"}
    assert comparison.tags["verdict"] == words[stats.crossed(values["difference"].unstack()).direction]
    for role in ROLES:
        gain = stats.crossed(values[f"{role}_ema_gain"].unstack())
        assert comparison.tags[f"ema_verdict_{role}"] == words[gain.direction], role


def test_each_retrains_test_means_are_its_per_sample_scores(retrains, test_scores):
    for role, runs in retrains.items():
        for seed, run in runs.items():
            assert run.data.metrics["test_mmd_ratio"] == pytest.approx(test_scores[role, "last"][seed].mean())
            assert run.data.metrics["test_ema_mmd_ratio"] == pytest.approx(
                test_scores[role, "ema"][seed].mean()
            )


@pytest.mark.skipif(not FULL_MODE, reason="smoke mode trains too briefly for the lab's targets")
def test_in_full_mode_the_tuned_configuration_meets_the_labs_targets_on_the_test(client, experiment):
    """On this machine, in full mode: the tuned configuration at most 2x the MMD floor on the test, and
    clearly better than the default one (by the lab's rule)."""
    comparison = newest_run(client, experiment, "tags.stage = 'comparison'").data
    assert comparison.metrics["test_tuned_mmd_ratio"] <= 2.0, comparison.metrics["test_tuned_mmd_ratio"]
    assert comparison.tags["verdict"] == "better", comparison.metrics["test_difference_mmd_ratio"]


def test_the_figures_are_in_mlflow(client, experiment, retrains):
    """Each tuning trial's samples at each report, the loss at each step, the samplers next to a test
    sample, the test table, and the DDIM curve, where the UI shows them."""
    tuning = newest_run(client, experiment, "tags.mlflow.runName = 'tuning'")
    for trial in find_runs(client, experiment, f"tags.mlflow.parentRunId = '{tuning.info.run_id}'"):
        reports = len(metric_steps(client, trial.info.run_id, "mmd_ratio"))
        assert len(pictures(client, trial.info.run_id)) == reports, f"{trial.info.run_name}: one per report"
    comparison = newest_run(client, experiment, "tags.stage = 'comparison'")
    artifacts = {a.path for a in client.list_artifacts(comparison.info.run_id)}
    assert {"loss_per_step.png", "baseline_vs_tuned.png", "test_table.json"} <= artifacts, artifacts
    tuned = client.get_model_version_by_alias(MODEL, "tuned").run_id
    assert "ddim_quality_vs_steps.png" in {a.path for a in client.list_artifacts(tuned)}


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
    assert tuned.data.metrics["test_chosen_minus_ddpm_margin"] >= 0


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


def test_the_registered_samplers_are_models_from_code_with_nothing_pickled(client, experiment):
    for alias in ("baseline", "tuned", "champion"):
        info = mlflow.models.get_model_info(f"models:/{MODEL}@{alias}")
        files = {a.path for a in client.list_logged_model_artifacts(info.model_id)}
        files |= {a.path for a in client.list_logged_model_artifacts(info.model_id, "artifacts")}
        assert {"tiny_diffusion.py", "artifacts/weights.npz"} <= files, files
        assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
        assert info.flavors["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model", alias
