"""Regenerate the README's screenshots of the MLflow UI (imgs/*.png) from real runs.

    make screenshots                # installs chromium and playwright when missing, then runs this
    python -m tools.screenshots     # a temporary server, mlflow_tracking.ipynb in full, five PNGs

The MLflow UI is shown in Debian's chromium, headless, driven by Playwright; the browser may only
reach 127.0.0.1. The tests (tests/ui.py) open the UI with the same `ui_page` and `show`.
"""

import json
import os
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from mlflow import MlflowClient

from tools import REPO, mlflow_server
from tools.notebooks import execute_notebook

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # tests/test_ui.py skips without it; `make screenshots` installs it
    sync_playwright = None

IMGS = REPO / "imgs"
NOTEBOOK = "mlflow_tracking.ipynb"
EXPERIMENT = "mlflow-tracking-lab"
MODEL = "digits-classifier"
EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")  # one chart each
CHROMIUM = Path("/usr/bin/chromium")
# Running as root (CI containers) needs --no-sandbox; the rest keep chromium quiet and off the network.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
VIEWPORT = {"width": 1280, "height": 800}
# The classic "Model training" UI without the assistant panel, as after a user's first clicks.
UI_PREFERENCES = """
localStorage.setItem('mlflow.workflowType_v1', '"machine_learning"');
localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
"""
UI_TIMEOUT_MS = 60_000  # the first render is slow on a busy 2-core machine


def browser_unavailable() -> str | None:
    """Why the UI cannot be opened in a browser here, or None when it can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium, or `make chromium`)"
    if sync_playwright is None:
        return "playwright is not installed in the venv (pip install -r requirements.txt)"
    return None


def only_loopback(route):
    """Let the page reach the local MLflow server only; block anything else it asks for."""
    if route.request.url.startswith(f"http://{mlflow_server.HOST}:"):
        route.continue_()
    else:
        route.abort()


@contextmanager
def ui_page(viewport=VIEWPORT):
    """A page in headless chromium, set up for the MLflow UI; the browser closes on exit."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport=viewport)
            context.set_default_timeout(UI_TIMEOUT_MS)
            context.add_init_script(UI_PREFERENCES)
            context.route("**/*", only_loopback)
            yield context.new_page()
        finally:
            browser.close()


def show(page, url: str, *texts: str):
    """Open url and wait until each text is visible (the UI keeps polling: no network idle)."""
    page.goto(url)
    for text in texts:
        page.get_by_text(text, exact=True).first.wait_for()


def show_logged_models(page, url: str, client: MlflowClient, run):
    """Open the run's page at url and scroll to its Logged models table, once each model is listed."""
    outputs = run.outputs.model_outputs
    show(page, url, *{client.get_logged_model(output.model_id).name for output in outputs})
    page.get_by_text(f"Logged models ({len(outputs)})", exact=True).scroll_into_view_if_needed()


def capture(page, path: Path):
    page.wait_for_timeout(1000)  # let charts finish their entry animation
    page.screenshot(path=path)
    print(f"  {path.name}")


def capture_all(url: str, imgs: Path):
    """Take the five screenshots the README and the notebook show, from what the notebook logged at url."""
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    sweep_children = [
        run for run in runs.values() if run.data.tags.get("mlflow.parentRunId") == runs["sweep"].info.run_id
    ]
    child_names = sorted(run.info.run_name for run in sweep_children)
    experiment_url = f"{url}/#/experiments/{experiment.experiment_id}"

    with ui_page() as page:
        show(page, f"{experiment_url}/runs", "baseline", "sweep", "evaluate-champion", "sklearn-autolog")
        page.get_by_role("row").filter(has_text="sweep").locator(
            "button[data-component-id*=runnamecellrenderer]"
        ).click()  # unfold the sweep's nested runs
        page.get_by_text(child_names[0], exact=True).wait_for()
        capture(page, imgs / "image.png")

    with ui_page({"width": 1280, "height": 1000}) as page:  # tall enough for all four charts
        chart_legends = [f"baseline ({metric})" for metric in EPOCH_METRICS]
        show(page, f"{experiment_url}/runs/{runs['baseline'].info.run_id}/model-metrics", *chart_legends)
        capture(page, imgs / "run_metrics.png")

    with ui_page() as page:
        run_ids = quote(json.dumps([run.info.run_id for run in sweep_children]))
        experiment_ids = quote(json.dumps([experiment.experiment_id]))
        compare_url = f"{url}/#/compare-runs?runs={run_ids}&experiments={experiment_ids}"
        show(page, compare_url, *child_names)
        metrics_box = page.get_by_role("combobox").nth(1)  # the parallel-coordinates plot's metrics
        metrics_box.click()
        page.keyboard.press("Backspace")  # drop the default metric (train_loss) ...
        metrics_box.fill("val_accuracy")  # ... for the one the sweep picks the champion on
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.evaluate("document.activeElement.blur()")
        page.locator(".js-plotly-plot").get_by_text("val_accuracy").wait_for()
        capture(page, imgs / "compare_runs.png")

    with ui_page({"width": 1600, "height": 900}) as page:  # wide enough for the registered version
        baseline = runs["baseline"]
        show_logged_models(page, f"{experiment_url}/runs/{baseline.info.run_id}", client, baseline)
        capture(page, imgs / "logged_models.png")

    with ui_page() as page:
        champion = client.get_model_version_by_alias(MODEL, "champion")
        show(page, f"{url}/#/models/{MODEL}", f"Version {champion.version}", "@ champion")
        capture(page, imgs / "registered_model.png")


def main() -> int:
    unavailable = browser_unavailable()
    if unavailable:
        print(f"error: {unavailable}", file=sys.stderr)
        return 1

    # Turn `kill` into a normal exit, so `finally` stops the server.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="mlflow-lab-screenshots-") as data_dir,
            mlflow_server.temporary_server(Path(data_dir)) as server,
        ):
            print(f"Running {NOTEBOOK} in full against {server.url} ...")
            os.environ.update(MLFLOW_TRACKING_URI=server.url, SMOKE_TEST="0")
            execute_notebook(REPO / NOTEBOOK)
            print(f"Capturing the UI into {IMGS} ...")
            IMGS.mkdir(exist_ok=True)
            capture_all(server.url, IMGS)
    except mlflow_server.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Done in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
