"""Connect a notebook to the lab's MLflow tracking server, or fail in seconds with the fix.

Without this check the MLflow client retries a missing server for about four minutes.
"""

import os
import urllib.error
import urllib.request

import mlflow

DEFAULT_URI = "http://127.0.0.1:8080"
START_SERVER = "mlflow server --host 127.0.0.1 --port 8080"


def connect(timeout: float = 3.0) -> str:
    """Point MLflow at MLFLOW_TRACKING_URI (default http://127.0.0.1:8080) and return that URI,
    once an MLflow server has answered there; otherwise raise an error that says what to do."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)
    check_server(uri, timeout)
    mlflow.set_tracking_uri(uri)
    print(f"Connected to the MLflow server at {uri}")
    return uri


def check_server(uri: str, timeout: float) -> None:
    if not uri.startswith(("http://", "https://")):
        raise ValueError(f"MLFLOW_TRACKING_URI={uri!r} is not an http(s) URL; use e.g. {DEFAULT_URI}")
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            answer = response.read().decode(errors="replace").strip()
    except urllib.error.HTTPError as error:
        answer = f"HTTP {error.code}"
    except OSError as error:
        raise ConnectionError(
            f"No MLflow server answers at {uri} ({getattr(error, 'reason', error)}).\n"
            f"Start one in a terminal, in the lab folder:\n\n    {START_SERVER}\n\n"
            "(or `make server`), then run this cell again."
        ) from None
    if answer != "OK":
        raise ConnectionError(
            f"Something answers at {uri}, but not an MLflow server (/health said {answer[:80]!r}).\n"
            "Free the port, or start MLflow on another one (`make server PORT=8081`) and set "
            "MLFLOW_TRACKING_URI=http://127.0.0.1:8081 before starting Jupyter."
        )
