"""How much does tracking every Ray Tune trial in MLflow cost, on the tuning notebook's real sweep?

Runs the notebook's random search (TRIALS trials of its digits MLP, MAX_EPOCHS epochs each, one CPU per
trial) four ways, against a temporary MLflow server, in turn, `--repeats` times, and prints each way's
median wall time and its ratio to the sweep without logging:

  no logging                   Tune alone
  MLflowLoggerCallback         Ray's callback: from the driver, one request per reported number
  setup_mlflow                 each trial opens its run in its worker and logs every epoch there
  BatchedMLflowLoggerCallback  the lab's (labkit/trial_logger.py), what the notebook's strategies use:
                               from the driver, a few requests per trial, in a background thread

(The notebook itself measures, on the sweeps it runs, how long Tune's loop waits for each logger; this
times whole sweeps, setup_mlflow's included.) It runs the notebook's own code, not a copy: the cells of
ray_tune_solution.ipynb tagged `bench` (setup, data, model, search space, trainable, Ray's start, and
the trainable that logs with setup_mlflow), executed in this process.

    make bench [BENCH_ARGS='--repeats 5 --smoke']   # python -m benchmarks.mlflow_logging_overhead
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import mlflow

from labkit.trial_logger import BatchedMLflowLoggerCallback
from tools import REPO, mlflow_server
from tools.notebooks import load_cells

NOTEBOOK = REPO / "ray_tune_solution.ipynb"
TARGET = 1.5  # the strategies' logger may take at most this many times the sweep without logging


def logging_ways(notebook: dict, parent_run_id: str) -> dict:
    """Each way to log: (the trainable, the callbacks), the trials' runs nested under parent_run_id."""
    nested = {"experiment_name": notebook["EXPERIMENT"], "tags": {"mlflow.parentRunId": parent_run_id}}
    uri, tune, trainable = notebook["TRACKING_URI"], notebook["tune"], notebook["train_digits"]
    inside = tune.with_parameters(notebook["train_digits_logging_inside"], parent_run_id=parent_run_id)
    return {
        "no logging": (trainable, []),
        "MLflowLoggerCallback": (trainable, [notebook["MLflowLoggerCallback"](uri, **nested)]),
        "setup_mlflow": (inside, []),
        "BatchedMLflowLoggerCallback": (trainable, [BatchedMLflowLoggerCallback(uri, **nested)]),
    }


def time_sweep(notebook: dict, trainable, callbacks: list) -> float:
    """Seconds that the notebook's random search takes with this trainable and these callbacks."""
    tune = notebook["tune"]
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=notebook["SEARCH_SPACE"],
        tune_config=tune.TuneConfig(
            num_samples=notebook["TRIALS"],
            search_alg=notebook["BasicVariantGenerator"](random_state=notebook["SEED"]),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(storage_path=notebook["STORAGE_PATH"], callbacks=callbacks, verbose=0),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def time_the_ways(notebook: dict, repeats: int) -> dict[str, list[float]]:
    """Wall times of the sweep logged each way, `repeats` times, the ways taking turns."""
    experiment = mlflow.set_experiment(notebook["EXPERIMENT"])
    parent = mlflow.MlflowClient().create_run(experiment.experiment_id, run_name="benchmark").info.run_id
    time_sweep(notebook, *logging_ways(notebook, parent)["no logging"])  # warm Ray's workers up
    times = {}
    for _ in range(repeats):
        for way, (trainable, callbacks) in logging_ways(notebook, parent).items():
            times.setdefault(way, []).append(time_sweep(notebook, trainable, callbacks))
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="the notebook's smoke-test sweep (seconds)")
    args = parser.parse_args(argv)
    os.environ["SMOKE_TEST"] = "1" if args.smoke else "0"
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's classic output, which verbose=0 silences
    with (
        tempfile.TemporaryDirectory(prefix="logging-benchmark-") as workdir,
        mlflow_server.temporary_server(Path(workdir) / "mlflow") as server,
    ):
        os.environ["MLFLOW_TRACKING_URI"] = server.url
        os.chdir(workdir)  # the notebook keeps Tune's results in ./ray_results
        notebook = load_cells(NOTEBOOK, "bench")
        try:
            times = time_the_ways(notebook, args.repeats)
        finally:
            notebook["ray"].shutdown()

    sweep = f"{notebook['TRIALS']} trials x {notebook['MAX_EPOCHS']} epochs"
    print(f"\nThe notebook's random search ({sweep}), median of {args.repeats} runs:")
    baseline = statistics.median(times["no logging"])
    for way, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(f"  {way:28s} {median:6.1f} s   {median / baseline:4.2f}x   ({runs})")
    ratio = statistics.median(times["BatchedMLflowLoggerCallback"]) / baseline
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"The strategies' logger takes {ratio:.2f}x the unlogged time: the {TARGET}x target is {verdict}")


if __name__ == "__main__":
    main()
