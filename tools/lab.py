"""Start the lab: the MLflow tracking server and, for `lab`, Jupyter Lab on the notebooks.

    make lab [PORT=8080]       # python -m tools.lab lab: server (unless one answers) + Jupyter Lab
    make server [PORT=8080]    # python -m tools.lab server: the MLflow server alone, until Ctrl-C

The server keeps its SQLite database and artifacts in `.mlflow/` (git-ignored) and listens on
127.0.0.1 only. Ctrl-C (or SIGTERM, or closing the terminal) stops Jupyter and the server it started.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from labkit import ray_settings
from tools import REPO, mlflow_server
from tools.mlflow_server import HOST, ServerError

DATA_DIR = REPO / ".mlflow"
# Defaults for Jupyter Lab's settings (overrides.json): no pop-up asking to fetch Jupyter's news, no
# update checks. A student can still change them in Settings.
JUPYTERLAB_SETTINGS = Path(__file__).with_name("jupyterlab_settings")


def ensure_server(port: int) -> subprocess.Popen | None:
    """Start a server on port unless an MLflow server answers there; None when one already did."""
    url = f"http://{HOST}:{port}"
    found = mlflow_server.probe(url)
    if found == "mlflow":
        print(f"An MLflow server already answers at {url}; using it.")
        return None
    if found == "other":
        raise ServerError(
            f"Port {port} is taken by something that is not an MLflow server.\n"
            f"Stop it, or pick another port: make lab PORT=8081 (the notebooks follow "
            f"MLFLOW_TRACKING_URI, which `make lab` sets for them)."
        )
    log_path = DATA_DIR / "server.log"
    print(f"Starting the MLflow server at {url} (data in {DATA_DIR}, log in {log_path}) ...")
    server = mlflow_server.start(port, DATA_DIR, log_path)
    mlflow_server.wait_until_healthy(url, server, log_path)
    print(f"MLflow UI: {url}")
    return server


def start_jupyter(tracking_uri: str, port: int, open_browser: bool) -> subprocess.Popen:
    """Jupyter Lab on the lab folder, at `port` or the next free one (Jupyter moves on by itself)."""
    command = [
        str(Path(sys.executable).with_name("jupyter-lab")),
        f"--notebook-dir={REPO}",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.answer_yes=True",  # Ctrl-C stops the lab at once, without a y/n question
        f"--LabApp.app_settings_dir={JUPYTERLAB_SETTINGS}",
    ]
    if not open_browser:
        command.append("--no-browser")
    if os.geteuid() == 0:  # containers and course VMs often run as root; Jupyter refuses it otherwise
        command.append("--allow-root")
    # The lab's Ray settings (labkit/ray_settings.py), unless the environment says otherwise.
    env = {**ray_settings.ENVIRONMENT, **os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    return subprocess.Popen(command, env=env)


def jupyter_url(jupyter: subprocess.Popen, timeout: float = 120) -> str:
    """The URL, token included, at which this Jupyter answers: from the file it writes on start-up."""
    info_file = Path(jupyter_runtime_dir()) / f"jpserver-{jupyter.pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if jupyter.poll() is not None:
            raise ServerError(f"Jupyter Lab exited with code {jupyter.returncode} (its messages are above)")
        if info_file.exists():
            try:
                info = json.loads(info_file.read_text())
                url = f"{info['url'].rstrip('/')}/lab?token={info['token']}"
                urllib.request.urlopen(url, timeout=2).close()
                return url
            except (ValueError, KeyError, OSError):
                pass  # half written, or not answering yet
        time.sleep(0.5)
    raise ServerError(f"Jupyter Lab did not start within {timeout:.0f} s (its messages are above)")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Ask a child to stop (SIGTERM), and kill it if it has not within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_on(signum, _frame):
    raise KeyboardInterrupt  # like Ctrl-C: unwind, stopping what this process started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["server", "lab"])
    parser.add_argument("--port", type=int, default=8080, help="the MLflow server's port")
    parser.add_argument("--jupyter-port", type=int, default=8888, help="Jupyter's first choice of port")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    args = parser.parse_args(argv)

    # Ctrl-C, `kill` or a closed terminal: stop cleanly. SIGINT too, explicitly: a shell that starts
    # a command in the background (`make lab &`, CI runners) leaves it ignored, and Python keeps that.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop_on)
    server = jupyter = None
    try:
        server = ensure_server(args.port)
        if args.command == "server":
            if server:
                print("Press Ctrl-C to stop the server.")
                server.wait()
            return 0
        tracking_uri = f"http://{HOST}:{args.port}"
        jupyter = start_jupyter(tracking_uri, args.jupyter_port, open_browser=not args.no_browser)
        print(f"\nJupyter Lab: {jupyter_url(jupyter)}\nMLflow UI:   {tracking_uri}\n"
              "Press Ctrl-C to stop both.\n", flush=True)  # fmt: skip
        return jupyter.wait()
    except KeyboardInterrupt:
        return 0
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        if jupyter:
            print("Stopping Jupyter Lab ...")
            stop(jupyter)
        if server:
            print("Stopping the MLflow server ...")
            mlflow_server.stop(server)


if __name__ == "__main__":
    sys.exit(main())
