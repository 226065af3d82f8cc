"""How much does tracking every Ray Tune trial in MLflow cost?

Runs the same sweep of trivial trials three ways against a temporary MLflow server and prints the
median wall time of each and its ratio to the sweep without logging:

  no logging          Tune alone (reuse_actors=True)
  callback            ray's MLflowLoggerCallback: one HTTP request per reported value
  setup_mlflow batch  setup_mlflow() inside the trainable, one log_metrics call per report (the
                      notebooks' default path)

    .venv/bin/python benchmarks/mlflow_logging_overhead.py [--trials 12] [--reports 5] [--repeats 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlflow  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.air.integrations.mlflow import MLflowLoggerCallback, setup_mlflow  # noqa: E402

from tools import lab  # noqa: E402


def trivial(config, reports):
    for step in range(reports):
        tune.report({"score": config["x"] * step, "step": step})


def trivial_logged(config, reports, tracking_uri, experiment_id):
    tracker = setup_mlflow(
        config, tracking_uri=tracking_uri, experiment_id=experiment_id,
        run_name=tune.get_context().get_trial_name(),
    )  # fmt: skip
    try:
        for step in range(reports):
            score = config["x"] * step
            tracker.log_metrics({"score": score}, step=step)
            tune.report({"score": score, "step": step})
    finally:
        tracker.end_run()


def sweep(trainable, trials, storage, callbacks=()):
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--reports", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="logging-benchmark-"))
    port = lab.free_port()
    uri = f"http://{lab.HOST}:{port}"
    server = lab.start_server(port, workdir / "mlflow", workdir / "server.log")
    try:
        lab.wait_until_healthy(uri, server, workdir / "server.log")
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.create_experiment("logging-benchmark")
        ray.init(num_cpus=min(2, os.cpu_count()), include_dashboard=False, log_to_driver=False)
        storage = str(workdir / "ray_results")
        plain = tune.with_parameters(trivial, reports=args.reports)
        logged = tune.with_parameters(
            trivial_logged, reports=args.reports, tracking_uri=uri, experiment_id=experiment_id
        )
        callback = MLflowLoggerCallback(tracking_uri=uri, experiment_name="logging-benchmark")
        variants = {
            "no logging": lambda: sweep(plain, args.trials, storage),
            "callback": lambda: sweep(plain, args.trials, storage, [callback]),
            "setup_mlflow batch": lambda: sweep(logged, args.trials, storage),
        }
        sweep(tune.with_parameters(trivial, reports=1), 2, storage)  # warm up workers
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                times[name].append(run())
        baseline = statistics.median(times["no logging"])
        print(f"{args.trials} trials x {args.reports} reports, median of {args.repeats} runs:")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:20s} {median:6.1f} s   {median / baseline:4.2f}x")
    finally:
        ray.shutdown()
        lab.stop(server)


if __name__ == "__main__":
    main()
