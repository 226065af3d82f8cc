"""How long Ray takes to start on this machine: the lab's environment and settings against Ray's defaults.

Each arm runs `--repeats` times, the arms taking turns, each time in a fresh Python process that
measures, on a trivial two-trial sweep whose trainable imports torch:

  import ray        importing ray and ray.tune
  ray.init          starting a local Ray with 2 CPUs and no dashboard
  first trial line  from calling Tuner.fit to the first line of the sweep's first trial
  fit               the whole Tuner.fit

and the medians are printed side by side, with each ratio to Ray's defaults. The arms:

  Ray's defaults    the environment `pip install -r requirements.txt` leaves (rfc3987_syntax
                    importable: a temporary copy is put on PYTHONPATH) and Ray's own settings
  no rfc3987_syntax the lab's environment (`make lab` removes it), Ray's own settings
  lab               the lab's environment and its Ray settings (labkit.ray_settings)

    make bench-ray [BENCH_ARGS='--repeats 5']   # python -m benchmarks.ray_startup
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from labkit.ray_settings import ENVIRONMENT

RFC3987_SYNTAX = "rfc3987-syntax==1.1.0"  # the version jupyter-events' jsonschema extra pulls in
PROBE = r"""
import json, sys, time
start = time.perf_counter()
import ray
from ray import tune
imported = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
initialised = time.perf_counter()

def trainable(config):
    started = time.time()
    import torch
    tune.report({"started": started, "threads": torch.get_num_threads()})

tuner = tune.Tuner(trainable, param_space={"k": tune.grid_search([0, 1])},
                   run_config=tune.RunConfig(storage_path=sys.argv[1], verbose=0))
fit_called = time.time()
results = tuner.fit()
fitted = time.time()
first_line = min(result.metrics["started"] for result in results)
print(json.dumps({
    "import ray": imported - start, "ray.init": initialised - imported,
    "first trial line": first_line - fit_called, "fit": fitted - fit_called,
}))
ray.shutdown()
"""


def importable_rfc3987_syntax(folder: str) -> str:
    """A folder holding rfc3987_syntax, to put on PYTHONPATH for the defaults arm."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", folder]
    subprocess.run([*pip, RFC3987_SYNTAX], check=True)
    return folder


def measure(env: dict, storage: str) -> dict:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, storage], env=env, capture_output=True, text=True, timeout=300
    )
    if probe.returncode != 0:
        raise RuntimeError(f"the probe failed:\n{probe.stderr[-3000:]}")
    return json.loads(probe.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    lab = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # no cluster, no settings
    lab["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="ray-startup-") as folder:
        rfc3987 = importable_rfc3987_syntax(os.path.join(folder, "rfc3987"))
        arms = {
            "Ray's defaults": dict(
                lab, PYTHONPATH=os.pathsep.join(filter(None, [rfc3987, lab.get("PYTHONPATH")]))
            ),
            "no rfc3987_syntax": lab,
            "lab": dict(lab, **ENVIRONMENT),
        }
        times = {arm: [] for arm in arms}
        for _ in range(args.repeats):
            for arm, env in arms.items():
                times[arm].append(measure(env, os.path.join(folder, "results")))

    figures = list(times["lab"][0])
    medians = {
        arm: {f: statistics.median(run[f] for run in runs) for f in figures} for arm, runs in times.items()
    }
    defaults = medians["Ray's defaults"]
    print(f"\nRay start-up on {os.cpu_count()} cores, median of {args.repeats} fresh processes (seconds):")
    print(f"{'':18s}" + "".join(f"{f:>18s}" for f in figures))
    for arm, row in medians.items():
        cells = (f"{row[f]:6.2f} ({row[f] / defaults[f]:4.2f}x)" for f in figures)
        print(f"{arm:18s}" + "".join(f"{cell:>18s}" for cell in cells))
    print(f"the lab's settings: {ENVIRONMENT}")


if __name__ == "__main__":
    main()
