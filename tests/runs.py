"""Look-ups of what the notebooks logged, for the tests that read it back from MLflow."""

import mlflow


def find_runs(client, experiment, filter_string: str = "") -> list:
    return client.search_runs([experiment.experiment_id], filter_string, max_results=1000)


def the_run(client, experiment, filter_string: str):
    runs = find_runs(client, experiment, filter_string)
    assert len(runs) == 1, f"expected one run for {filter_string!r}, found {len(runs)}"
    return runs[0]


def newest_run(client, experiment, filter_string: str):
    """The newest matching run (a notebook may have run more than once against this server)."""
    runs = find_runs(client, experiment, filter_string)
    assert runs, f"no run matches {filter_string!r}"
    return max(runs, key=lambda run: run.info.start_time)


def metric_steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def logged_models(experiment, run_id: str) -> list:
    return mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        output_format="list",
    )
