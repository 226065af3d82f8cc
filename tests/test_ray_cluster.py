"""The lab on a real (local, two-node) Ray cluster, one for the module: the tuning notebook's trials run on
it through RAY_ADDRESS, with Tune's state in the storage LAB_STORAGE_PATH names (what every node of a
real cluster would mount), up to its first sweep (the cell tagged first-sweep), against a private MLflow
server; and `make grade` with RAY_ADDRESS set spreads the submissions over it as Ray tasks."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.test_grade import grade_args, write_exercise, write_submissions
from tools import REPO, grade, ray_cluster
from tools.notebooks import execute_notebook, printed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_node_cluster():
    """A head and a second node on 127.0.0.1, one CPU each, with Ray's token authentication: every node
    and the driver present the same secret, the cluster's own. Yields what a driver needs to join it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RAY_AUTH_TOKEN", raising=False)  # not the session cluster's
        with ray_cluster.local_cluster(nodes=2, cpus_per_node=1) as join:
            yield join


@pytest.fixture
def on_the_cluster(two_node_cluster, monkeypatch):
    """The two-node cluster in this process's environment: what the drivers started from here join."""
    for key, value in two_node_cluster.items():
        monkeypatch.setenv(key, value)


def test_the_first_sweep_runs_on_a_two_node_cluster(on_the_cluster, private_server, monkeypatch, tmp_path):
    shared = tmp_path / "shared-storage"
    monkeypatch.setenv("LAB_STORAGE_PATH", str(shared))
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


def test_with_ray_address_set_submissions_are_graded_as_tasks_over_the_cluster(
    two_node_cluster, tmp_path, monkeypatch, capsys
):
    """The small exercise of tests/test_grade.py graded on this machine, then over the cluster: the same
    grades, and both nodes grading."""
    reference, lab = write_exercise(tmp_path)
    names = ["01_solution.ipynb", "02_tampering.ipynb", "03_untouched.ipynb", "04_wrong_double.ipynb"]
    submissions = write_submissions(tmp_path / "submissions", names)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the session's cluster, for the notebooks
    assert grade.main([str(submissions), *grade_args(reference, lab, tmp_path / "here")]) == 0
    for key, value in two_node_cluster.items():
        monkeypatch.setenv(key, value)
    assert grade.main([str(submissions), *grade_args(reference, lab, tmp_path / "cluster")]) == 0
    assert (tmp_path / "here" / "grades.csv").read_text() == (tmp_path / "cluster" / "grades.csv").read_text()
    nodes = {
        line.rsplit(" on ", 1)[1].split()[0]
        for line in capsys.readouterr().out.splitlines()
        if " s on " in line
    }
    assert len(nodes) == 2, f"graded on {nodes}"
