"""How much does tracking every Ray Tune trial in MLflow cost?

Runs the same sweep of trivial trials (5 reports each) four ways against a temporary MLflow server
and prints the median wall time of each and its ratio to the sweep without logging:

  no logging            Tune alone (reuse_actors=True)
  MLflowLoggerCallback  Ray's callback: one HTTP request per reported value, from the driver
  setup_mlflow          each trial opens its run in its worker, one log_metrics call per report
  MLflowTrialLogger     the tuning notebook's callback (its default): per trial, one request to
                        create the run, one log_batch, one to end it, from the driver

The trainables and the logger are the ones defined in ray_tune_solution.ipynb, not copies.

    make bench [BENCH_ARGS='--trials 12 --repeats 5']   # python -m benchmarks.mlflow_logging_overhead
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # as in the notebook: no link per ended run
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic output, which verbose=0 silences

import mlflow  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.air.integrations.mlflow import MLflowLoggerCallback  # noqa: E402

from labkit.trial_logger import MLflowTrialLogger  # noqa: E402
from tools import REPO, mlflow_server  # noqa: E402
from tools.notebooks import load_definitions  # noqa: E402

NOTEBOOK = REPO / "ray_tune_solution.ipynb"
TARGET = 1.5  # the notebook's default way may take at most this many times the sweep without logging


def sweep(trainable, trials, storage, callbacks=()) -> float:
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, callbacks=list(callbacks), verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert not results.errors, results.errors
    return elapsed


def time_the_ways(trials: int, repeats: int, notebook: dict, uri: str, workdir: Path) -> dict:
    """Wall times of each way to log, `repeats` times, against the MLflow server at uri."""
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment("logging-benchmark")
    parent_id = mlflow.MlflowClient().create_run(experiment_id, run_name="benchmark").info.run_id
    tracking = {"uri": uri, "experiment_id": experiment_id, "parent_run_id": parent_id}
    trivial = notebook["trivial_trainable"]
    logged = tune.with_parameters(notebook["trivial_trainable_logged"], tracking=tracking)
    ray_callback = MLflowLoggerCallback(uri, experiment_name="logging-benchmark")
    storage = str(workdir / "ray_results")
    ways = {
        "no logging": lambda: sweep(trivial, trials, storage),
        "MLflowLoggerCallback": lambda: sweep(trivial, trials, storage, [ray_callback]),
        "setup_mlflow": lambda: sweep(logged, trials, storage),
        "MLflowTrialLogger": lambda: sweep(
            trivial, trials, storage, [MLflowTrialLogger(uri, experiment_id, parent_id)]
        ),
    }
    ray.init(num_cpus=min(2, os.cpu_count()), include_dashboard=False, log_to_driver=False)
    try:
        sweep(trivial, 2, storage)  # warm up: the first sweep starts Ray's worker pool
        times = {way: [] for way in ways}
        for _ in range(repeats):
            for way, run in ways.items():
                times[way].append(run())
        return times
    finally:
        ray.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    notebook = load_definitions(NOTEBOOK, "trivial_trainable", "trivial_trainable_logged")
    with (
        tempfile.TemporaryDirectory(prefix="logging-benchmark-") as workdir,
        mlflow_server.temporary_server(Path(workdir) / "mlflow") as server,
    ):
        times = time_the_ways(args.trials, args.repeats, notebook, server.url, Path(workdir))

    baseline = statistics.median(times["no logging"])
    print(f"{args.trials} trials x 5 reports, median of {args.repeats} runs:")
    for way, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(f"  {way:22s} {median:6.1f} s   {median / baseline:4.2f}x   ({runs})")
    ratio = statistics.median(times["MLflowTrialLogger"]) / baseline
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"The notebook's default (MLflowTrialLogger) is {ratio:.2f}x: the {TARGET}x target is {verdict}.")


if __name__ == "__main__":
    main()
