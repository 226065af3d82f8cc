"""The MLflow UI shows what the tracking notebook logged, in a real browser (headless chromium)."""

import pytest

from tools import screenshots

EXPERIMENT = "mlflow-tracking-lab"
TOP_LEVEL_RUNS = ("baseline", "sweep", "evaluate-champion", "sklearn-autolog")
BROWSER_UNAVAILABLE = screenshots.browser_unavailable()


@pytest.mark.skipif(BROWSER_UNAVAILABLE is not None, reason=f"no browser for the UI: {BROWSER_UNAVAILABLE}")
def test_experiment_page_lists_the_runs(mlflow_server, notebook_ran):
    experiment = notebook_ran("mlflow_tracking.ipynb", EXPERIMENT)
    runs_page = f"{mlflow_server['url']}/#/experiments/{experiment.experiment_id}/runs"
    with screenshots.ui_page() as page:
        screenshots.show(page, runs_page, *TOP_LEVEL_RUNS)  # fails when a run name does not appear in time
        assert page.get_by_text(EXPERIMENT, exact=True).first.is_visible()
