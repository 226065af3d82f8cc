"""The tuning notebook's trials run on a real (local, two-node) Ray cluster through RAY_ADDRESS, with
Tune's state in the storage LAB_STORAGE_PATH names (what every node of a real cluster would mount): the
notebook runs up to its first sweep (the cell tagged first-sweep), against a private MLflow server."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from tools import REPO
from tools.mlflow_server import free_port
from tools.notebooks import execute_notebook, printed

RAY = str(Path(sys.executable).with_name("ray"))


def ray_start(*args: str) -> None:
    """`ray start` launches daemons and exits; the harness (a subreaper) adopts them."""
    command = [RAY, "start", "--disable-usage-stats", *args]
    started = subprocess.run(command, capture_output=True, text=True, timeout=120, env=os.environ)
    assert started.returncode == 0, f"{' '.join(command)} failed:\n{started.stdout}\n{started.stderr}"


@pytest.fixture
def two_node_cluster(monkeypatch):
    # Ray's token authentication: every node and the driver present the same secret.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    address = f"127.0.0.1:{free_port()}"
    # Ray's socket paths live under the temp dir and must stay short (a Unix socket path is < 108 bytes).
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={temp_dir}"]
    try:
        ray_start("--head", f"--port={address.rsplit(':', 1)[1]}", "--include-dashboard=false", *common)
        ray_start(f"--address={address}", *common)
        yield address
    finally:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        for process in started:
            process.terminate()
        _, alive = psutil.wait_procs(started, timeout=5)  # a few of Ray's daemons ignore SIGTERM
        for process in alive:
            process.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_the_first_sweep_runs_on_a_two_node_cluster(two_node_cluster, private_server, monkeypatch, tmp_path):
    shared = tmp_path / "shared-storage"
    monkeypatch.setenv("LAB_STORAGE_PATH", str(shared))
    monkeypatch.setenv("RAY_ADDRESS", two_node_cluster)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", private_server)
    monkeypatch.setenv("SMOKE_TEST", "1")
    notebook = execute_notebook(REPO / "ray_tune_solution.ipynb", until_tag="first-sweep")
    assert "2 node(s), 2 CPUs" in printed(notebook), "the notebook did not join the two-node cluster"
    client = MlflowClient(private_server)
    experiment = client.get_experiment_by_name("ray-tune-lab")
    [parent] = client.search_runs([experiment.experiment_id], "tags.strategy = 'first-sweep'")
    children = f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    trials = client.search_runs([experiment.experiment_id], children)
    assert len(trials) == int(parent.data.params["num_samples"]) >= 2, "the trials did not all log to MLflow"
    assert all(trial.info.status == "FINISHED" for trial in trials)
    sweep_state = Path(parent.data.params["tune_experiment_path"])
    assert sweep_state.parent == shared and (sweep_state / "tuner.pkl").exists(), (
        "Tune kept its state elsewhere"
    )
