"""`make lab` / `make server` (tools.lab): start MLflow and Jupyter, stop both, refuse a taken port,
reuse a running server, listen on loopback only."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tools import REPO, mlflow_server
from tools.mlflow_server import free_port


def run_lab(*args):
    return subprocess.run(
        [sys.executable, "-m", "tools.lab", *args], cwd=REPO,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_server_on_a_port_taken_by_something_else_says_so(other_service):
    result = run_lab("server", "--port", other_service.rsplit(":", 1)[1])
    assert result.returncode == 1
    assert "is taken by something that is not an MLflow server" in result.stderr
    assert "Traceback" not in result.stderr


def test_server_reuses_a_running_mlflow_server(mlflow_server):
    result = run_lab("server", "--port", mlflow_server["url"].rsplit(":", 1)[1])
    assert result.returncode == 0
    assert "already answers" in result.stdout


def test_server_listens_on_loopback_only(mlflow_server):
    port = int(mlflow_server["url"].rsplit(":", 1)[1])
    sockets = psutil.net_connections("inet")
    listening = {s.laddr.ip for s in sockets if s.status == psutil.CONN_LISTEN and s.laddr.port == port}
    assert listening == {"127.0.0.1"}


def test_server_refuses_a_foreign_host_header(mlflow_server):
    """MLflow's security middleware: a page on another site cannot reach the API by DNS rebinding."""
    api = f"{mlflow_server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(api, headers={"Host": "attacker.example"}), timeout=5)
    assert refused.value.code == 403
    with urllib.request.urlopen(api, timeout=5) as response:
        assert response.status == 200


def lab_url(lab: subprocess.Popen, timeout: float = 180) -> str:
    """Read what `make lab` prints until it names Jupyter's URL; fail with its output otherwise.
    A thread reads, so that a line waiting in the pipe's buffer is never missed."""
    lines, printed = queue.Queue(), []

    def read_lines():
        for line in lab.stdout:
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and lab.poll() is None:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        printed.append(line)
        if line.startswith("Jupyter Lab: "):
            return line.removeprefix("Jupyter Lab: ").strip()
    raise AssertionError(f"`make lab` printed no Jupyter URL:\n{''.join(printed)}")


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def ignore_sigint():
    """Start with SIGINT ignored, as a shell starts a command in the background (`make lab &`, CI
    runners): Ctrl-C must stop the lab all the same."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def fetches_news(url: str) -> str:
    """Whether Jupyter Lab at url (token included) fetches Jupyter's news: "none" (the default) makes it
    ask the user in a pop-up, "true" or "false" is the answer."""
    base, token = url.split("/lab?token=")
    api = f"{base}/lab/api/settings/@jupyterlab/apputils-extension:notification?token={token}"
    with urllib.request.urlopen(api, timeout=10) as response:
        settings = json.load(response)
    return settings["settings"].get("fetchNews", settings["schema"]["properties"]["fetchNews"]["default"])


@pytest.mark.parametrize(
    "stop", ["Ctrl-C", pytest.param("SIGTERM", marks=pytest.mark.slow)]
)  # fmt: skip
def test_make_lab_starts_mlflow_and_jupyter_for_a_newcomer_and_stops_both(stop, tmp_path):
    """As a newcomer: an empty home folder (no Ray token, no Jupyter settings), as root too (CI runs as
    root), with Jupyter's favourite port taken; no pop-up about Jupyter's news; stopped as a user would."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    mlflow_url = f"http://127.0.0.1:{free_port()}"
    home = tmp_path / "home"
    home.mkdir()
    with socket.socket() as taken:  # Jupyter's first choice of port is busy: it moves on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        command = [
            "make", "--no-print-directory", "lab", f"PORT={mlflow_url.rsplit(':', 1)[1]}",
            f"LAB_ARGS=--no-browser --jupyter-port {taken_port}",
        ]  # fmt: skip
        env = {key: value for key, value in os.environ.items() if not key.startswith(("XDG_", "JUPYTER"))}
        env.update(HOME=str(home), PYTHONUNBUFFERED="1")
        lab = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=ignore_sigint,
        )  # fmt: skip
        try:
            url = lab_url(lab)
            assert f":{taken_port}/" not in url, f"{url} is the taken port"
            assert "token=" in url and answers(url), f"the printed URL does not open Jupyter: {url}"
            assert mlflow_server.probe(mlflow_url) == "mlflow"
            assert fetches_news(url) == "false", "Jupyter Lab greets a newcomer with a pop-up about its news"
            if stop == "Ctrl-C":  # the terminal sends SIGINT to every process of the job
                os.killpg(lab.pid, signal.SIGINT)
            else:  # `kill` of the lab process itself
                [tool] = [p for p in psutil.Process(lab.pid).children() if "tools.lab" in p.cmdline()]
                tool.terminate()
            lab.wait(timeout=60)
        finally:
            if lab.poll() is None:
                os.killpg(lab.pid, signal.SIGKILL)
    assert mlflow_server.probe(mlflow_url) == "none" and not answers(url)
    assert not still_running(before)


def still_running(before: set) -> list:
    """Processes started since `before` that still run. Orphans are adopted by this (subreaper)
    process: reap the ones that have exited."""
    running = []
    for process in psutil.Process().children(recursive=True):
        if process.pid in before:
            continue
        if process.status() == psutil.STATUS_ZOMBIE:
            os.waitpid(process.pid, os.WNOHANG)
        else:
            running.append((process.pid, process.cmdline()))
    return running
