"""Start a local Ray cluster with `ray start` and stop it by its processes' pids: the test session's
shared cluster (tests/harness.py) and the two-node rehearsal (tests/test_ray_cluster.py).

The cluster uses Ray's token authentication with a secret of its own, made for it (`ray start` refuses
to start without a token, and a fresh machine has none in ~/.ray), unless RAY_AUTH_TOKEN is given.

`ray start` launches Ray's daemons and exits; the caller must be a child subreaper
(tools.processes.become_subreaper), so that the daemons become its descendants and can be stopped.
"""

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from labkit.ray_settings import ENVIRONMENT
from tools import processes
from tools.mlflow_server import HOST, free_port

RAY = str(Path(sys.executable).with_name("ray"))


class RayStartError(RuntimeError):
    """`ray start` failed; the message holds its output."""


def ray_start(*args: str, env: dict) -> None:
    command = [RAY, "start", "--disable-usage-stats", *args]
    started = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    if started.returncode != 0:
        raise RayStartError(f"{' '.join(command)} failed:\n{started.stdout}\n{started.stderr}")


@contextlib.contextmanager
def local_cluster(nodes: int = 1, cpus_per_node: int = 2, env: dict | None = None):
    """A Ray cluster of `nodes` nodes on 127.0.0.1, with the lab's laptop settings (labkit.ray_settings);
    yields what a driver needs to join it: RAY_ADDRESS and Ray's token (RAY_AUTH_MODE, RAY_AUTH_TOKEN).
    Every process it started is stopped when the block ends."""
    env = dict(os.environ if env is None else env, **ENVIRONMENT)
    env.pop("RAY_ADDRESS", None)
    env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    before = processes.descendants()
    address = f"{HOST}:{free_port()}"
    # Ray's socket paths live under the temp dir and must stay short (a Unix socket path is < 108 bytes).
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    common = [f"--node-ip-address={HOST}", f"--num-cpus={cpus_per_node}", f"--temp-dir={temp_dir}"]
    try:
        port = address.rsplit(":", 1)[1]
        ray_start("--head", f"--port={port}", "--include-dashboard=false", *common, env=env)
        for _ in range(nodes - 1):
            ray_start(f"--address={address}", *common, env=env)
        yield {"RAY_ADDRESS": address, **{key: env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}}
    finally:
        processes.stop_descendants(keep=before, timeout=3)  # a few of Ray's daemons ignore SIGTERM
        shutil.rmtree(temp_dir, ignore_errors=True)
