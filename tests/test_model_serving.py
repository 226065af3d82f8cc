"""The champion that mlflow_tracking.ipynb registers answers like a classifier behind
`mlflow models serve`, asked over HTTP as any client would."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tools import mlflow_server

MODEL_URI = "models:/digits-classifier@champion"
STARTUP_TIMEOUT_S = 120
MIN_ACCURACY = 0.8 if os.environ.get("SMOKE_TEST") == "1" else 0.97


def wait_until_ready(url: str, server: subprocess.Popen, log_path: Path):
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({server.returncode}):\n{mlflow_server.tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"mlflow models serve: no answer in {STARTUP_TIMEOUT_S} s:\n{mlflow_server.tail(log_path)}")


@pytest.fixture(scope="module")
def scoring_server(notebook_ran, tmp_path_factory):
    """`mlflow models serve` for the champion on a free port, as the notebook shows it; stopped with
    its process group (the CLI and the uvicorn server it starts)."""
    notebook_ran("mlflow_tracking.ipynb", "mlflow-tracking-lab")
    bin_dir = Path(sys.executable).parent  # the serve command starts `uvicorn` from the PATH
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    port = mlflow_server.free_port()
    url = f"http://{mlflow_server.HOST}:{port}"
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [
        str(bin_dir / "mlflow"), "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
        "--host", mlflow_server.HOST, "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_ready(url, server, log_path)
        yield url
    finally:
        mlflow_server.stop(server)


def invoke(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_served_champion_answers_with_digits_and_probabilities(scoring_server):
    digits = load_digits()
    images, labels = digits.data[:50] / 16.0, digits.target[:50]
    status, answer = invoke(scoring_server, {"inputs": images.tolist()})
    assert status == 200, answer
    predictions = answer["predictions"]
    assert len(predictions) == len(labels)
    for prediction in predictions:
        assert set(prediction) == {"digit", "probabilities"}, prediction
        assert len(prediction["probabilities"]) == 10
        assert sum(prediction["probabilities"]) == pytest.approx(1, abs=1e-4)
        assert prediction["digit"] == int(np.argmax(prediction["probabilities"]))
    assert np.mean([p["digit"] for p in predictions] == labels) >= MIN_ACCURACY


def test_served_champion_rejects_input_that_breaks_its_signature(scoring_server):
    status, answer = invoke(scoring_server, {"inputs": [[0.0] * 63]})  # 63 pixels, not 64
    assert status == 400, answer
    assert "shape" in answer["message"].lower(), answer
