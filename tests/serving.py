"""A registered model behind `mlflow models serve`, and a client for it: what the serving tests share."""

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools.mlflow_server import HOST, free_port, stop, tail

STARTUP_TIMEOUT_S = 120


@contextlib.contextmanager
def served(model_uri: str, log_dir: Path):
    """The model served with `--env-manager local` on a free port, answering /ping inside the block;
    stopped with its process group (the CLI and the uvicorn server it starts) after. Yields its URL."""
    bin_dir = Path(sys.executable).parent  # the serve command starts `uvicorn` from the PATH
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    port, log_path = free_port(), log_dir / "serve.log"
    command = [
        str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        url = f"http://{HOST}:{port}"
        wait_until_ready(url, process, log_path)
        yield url
    finally:
        stop(process)


def wait_until_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mlflow models serve exited ({process.returncode}):\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"mlflow models serve: no answer in {STARTUP_TIMEOUT_S} s:\n{tail(log_path)}")


def invoke(url: str, body: dict) -> tuple[int, dict]:
    """POST body to /invocations; the HTTP status and the decoded JSON answer."""
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)
