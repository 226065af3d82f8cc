"""The MLflow UI shows what the tracking notebook logged, in a real browser (headless chromium)."""

import pytest

from tests.ui import requires_browser, show, show_logged_models, ui_page

EXPERIMENT = "mlflow-tracking-lab"
TOP_LEVEL_RUNS = ("baseline", "sweep", "evaluate-champion", "sklearn-autolog")


@pytest.mark.slow
@requires_browser
def test_experiment_page_lists_the_runs_and_the_run_page_its_checkpoints(mlflow_server, notebook_ran, client):
    experiment = notebook_ran("mlflow_tracking.ipynb", EXPERIMENT)
    experiment_url = f"{mlflow_server['url']}/#/experiments/{experiment.experiment_id}"
    baseline = client.search_runs([experiment.experiment_id], "tags.stage = 'baseline'", max_results=1)[0]
    baseline_page = f"{experiment_url}/runs/{baseline.info.run_id}"
    with ui_page() as page:
        show(page, f"{experiment_url}/runs", *TOP_LEVEL_RUNS)  # fails when a name does not appear
        assert page.get_by_text(EXPERIMENT, exact=True).first.is_visible()
        show_logged_models(page, baseline_page, client, baseline)  # each checkpoint is listed
