"""The tuning notebook's trials run on a real (local, two-node) Ray cluster through RAY_ADDRESS, with
Tune's state in the storage LAB_STORAGE_PATH names (what every node of a real cluster would mount): the
notebook runs up to its first sweep (the cell tagged first-sweep), against a private MLflow server."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tools import REPO, ray_cluster
from tools.notebooks import execute_notebook, printed

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head and a second node on 127.0.0.1, one CPU each, with Ray's token authentication: every node
    and the driver present the same secret, the cluster's own. Yields its address, with the token set."""
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)  # not the session cluster's
    with ray_cluster.local_cluster(nodes=2, cpus_per_node=1) as join:
        for key, value in join.items():
            monkeypatch.setenv(key, value)
        yield join["RAY_ADDRESS"]


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
