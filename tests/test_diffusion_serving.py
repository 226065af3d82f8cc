"""The champion sampler of diffusion.ipynb served over HTTP with `mlflow models serve`, as a user would."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tools.mlflow_server import HOST, free_port, stop, tail

MODEL_URI = "models:/tiny-diffusion@champion"


@pytest.fixture(scope="module")
def served(notebook_ran, tmp_path_factory):
    """`mlflow models serve` of the champion on a free port, in its own process group, stopped after."""
    notebook_ran("diffusion.ipynb", "diffusion-lab")
    port, log_path = free_port(), tmp_path_factory.mktemp("serve") / "serve.log"
    command = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", MODEL_URI,
               "--env-manager", "local", "--host", HOST, "--port", str(port)]  # fmt: skip
    # it starts `uvicorn` by name: the virtual environment's bin folder must be on the PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"mlflow models serve exited:\n{tail(log_path)}"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the served model did not answer /ping:\n{tail(log_path)}"
            time.sleep(0.5)
        yield url
    finally:
        stop(process)


def invoke(url: str, records: list[dict]) -> tuple[int, dict]:
    """POST a table of requests to /invocations; the HTTP status and the decoded JSON answer."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"dataframe_records": records}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    "records",
    [
        [{"num_samples": 200, "seed": 0}, {"num_samples": 100, "seed": 1}],
        [{"num_samples": 100, "seed": 2, "sampler": "ddim", "steps": 10}],
    ],
    ids=["ddpm", "ddim"],
)
def test_the_served_champion_draws_the_points_it_draws_in_python(served, records):
    status, answer = invoke(served, records)
    assert status == 200, answer
    points = np.array(answer["predictions"])
    assert points.shape == (sum(record["num_samples"] for record in records), 2)
    in_python = mlflow.pyfunc.load_model(MODEL_URI).predict(pd.DataFrame(records))
    np.testing.assert_allclose(points, in_python, atol=1e-5)


def test_the_served_champion_answers_a_bad_request_with_what_is_allowed(served):
    status, answer = invoke(served, [{"num_samples": 0, "seed": 0}])
    assert status == 400, answer
    assert "num_samples must be 1 to 100000, not 0" in answer["message"], answer
