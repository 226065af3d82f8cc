"""Start the lab: a local MLflow tracking server and, for `lab`, Jupyter Lab on the notebooks.

    python tools/lab.py server [--port 8080]   # the MLflow server alone, until Ctrl-C
    python tools/lab.py lab [--port 8080]      # server (unless one answers already) + Jupyter Lab

The server keeps its SQLite database and artifacts in `.mlflow/` (git-ignored) and listens on
127.0.0.1 only. The tests, the benchmark and the screenshot tool use `temporary_server`.
"""

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = REPO / ".mlflow"
HOST = "127.0.0.1"


class LabError(RuntimeError):
    """A problem the user can fix; printed without a traceback."""


def probe(url: str, timeout: float = 2.0) -> str:
    """Return 'mlflow' if an MLflow server answers at url, 'other' if something else does, 'none'."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return "mlflow" if response.read().strip() == b"OK" else "other"
    except urllib.error.HTTPError:
        return "other"
    except (urllib.error.URLError, OSError):
        return "none"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_server(port: int, data_dir: Path, log_path: Path) -> subprocess.Popen:
    """Start `mlflow server` on 127.0.0.1:port in its own process group, logging to log_path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow), "server",
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
        "--artifacts-destination", str(data_dir / "artifacts"),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=data_dir
        )


def wait_until_healthy(url: str, server: subprocess.Popen, log_path: Path, timeout: float = 90):
    """Block until the server answers /health; raise LabError with its log if it dies or hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LabError(f"mlflow server exited with code {server.returncode}:\n{tail(log_path)}")
        if probe(url, timeout=1) == "mlflow":
            return
        time.sleep(0.5)
    stop(server)
    raise LabError(f"mlflow server did not answer {url}/health within {timeout:.0f} s:\n{tail(log_path)}")


def stop(process: subprocess.Popen, timeout: float = 10):
    """Stop a process started with start_new_session=True, with its whole process group."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path


@contextlib.contextmanager
def temporary_server(data_dir: Path):
    """An MLflow server on a free port, keeping its data and log in data_dir: answering /health
    inside the `with` block, stopped (with its process group) when the block ends."""
    port = free_port()
    url, log_path = f"http://{HOST}:{port}", data_dir / "server.log"
    process = start_server(port, data_dir, log_path)
    try:
        wait_until_healthy(url, process, log_path)
        yield Server(url, process, log_path)
    finally:
        stop(process)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def ensure_server(port: int) -> subprocess.Popen | None:
    """Start a server on port unless an MLflow server answers there; None when one already did."""
    url = f"http://{HOST}:{port}"
    found = probe(url)
    if found == "mlflow":
        print(f"An MLflow server already answers at {url}; using it.")
        return None
    if found == "other":
        raise LabError(
            f"Port {port} is taken by something that is not an MLflow server.\n"
            f"Stop it, or pick another port: make lab PORT=8081 (the notebooks follow "
            f"MLFLOW_TRACKING_URI, which `make lab` sets for them)."
        )
    log_path = DATA_DIR / "server.log"
    print(f"Starting the MLflow server at {url} (data in {DATA_DIR}, log in {log_path}) ...")
    server = start_server(port, DATA_DIR, log_path)
    wait_until_healthy(url, server, log_path)
    print(f"MLflow UI: {url}")
    return server


def wait_ignoring_ctrl_c(process: subprocess.Popen) -> int:
    """Wait for a child that handles Ctrl-C itself (Jupyter asks before it shuts down)."""
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["server", "lab"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8080)))
    args = parser.parse_args(argv)

    # Turn a closed terminal or `kill` into a normal exit, so `finally` stops the server.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    server = None
    try:
        server = ensure_server(args.port)
        if args.command == "server":
            if server is not None:
                print("Press Ctrl-C to stop the server.")
                wait_until_ctrl_c(server)
            return 0
        env = dict(os.environ, MLFLOW_TRACKING_URI=f"http://{HOST}:{args.port}")
        jupyter = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyter")), "lab", "--notebook-dir", str(REPO)],
            env=env,
        )
        return wait_ignoring_ctrl_c(jupyter)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            print("Stopping the MLflow server ...")
            stop(server)


def wait_until_ctrl_c(server: subprocess.Popen):
    """Wait for the server until it exits or the user presses Ctrl-C."""
    try:
        server.wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
