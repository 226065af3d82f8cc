"""Start, probe and stop MLflow tracking servers on 127.0.0.1: the library behind `make lab`, the
test harness, the benchmark and the screenshots."""

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

HOST = "127.0.0.1"


class ServerError(RuntimeError):
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


def start(
    port: int, data_dir: Path, log_path: Path, launcher: list[str] = (), env: dict | None = None
) -> subprocess.Popen:
    """Start `mlflow server` on 127.0.0.1:port in its own process group, logging to log_path; through
    `launcher` when given (a command that execs the server command after it), with `env` when given
    (else this process's environment)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        *launcher, str(mlflow), "server",
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
        "--backend-store-uri", f"sqlite:///{data_dir / 'mlflow.db'}",
        "--artifacts-destination", str(data_dir / "artifacts"),
    ]  # fmt: skip
    # The server's job runners (eight processes, for GenAI features the lab does not use) stay off.
    env = dict(os.environ if env is None else env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=data_dir, env=env
        )


def wait_until_healthy(url: str, server: subprocess.Popen, log_path: Path, timeout: float = 90, inside=None):
    """Block until the server answers /health; raise ServerError with its log if it dies or hangs.
    `inside(function)`, when given, runs the probe where the server's network is (a namespace)."""
    deadline = time.monotonic() + timeout
    check = lambda: probe(url, timeout=1)  # noqa: E731
    answers = check if inside is None else lambda: inside(check)
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"mlflow server exited with code {server.returncode}:\n{tail(log_path)}")
        if answers() == "mlflow":
            return
        time.sleep(0.5)
    stop(server)
    raise ServerError(f"mlflow server did not answer {url}/health within {timeout:.0f} s:\n{tail(log_path)}")


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
    process = start(port, data_dir, log_path)
    try:
        wait_until_healthy(url, process, log_path)
        yield Server(url, process, log_path)
    finally:
        stop(process)


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
