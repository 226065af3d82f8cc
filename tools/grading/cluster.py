"""Grading spread over a Ray cluster (`make grade` with RAY_ADDRESS set): each submission is a Ray
task that grades it on the node Ray picks (its sandbox, MLflow server and kernel there), reserving
the memory one submission may use; the kernel joins the same cluster, so its trials run wherever the
cluster has room. This process, on the head, records each submission as its task finishes.

On a cluster the kernel runs as the cluster's user (Ray's workers run the trials as that user
anyway, and the kernel must reach the cluster's sockets): the sandbox keeps its folder, environment,
cgroups and rlimits, not a user id of its own. The grader's code travels with the tasks
(runtime_env py_modules); the nodes need the lab's environment (the same .venv path).
"""

import dataclasses
import os
import socket
import tempfile
from pathlib import Path

import ray

import tools
from tools.grading.exercise import Exercise
from tools.grading.sandbox import Sandbox
from tools.grading.submission import GraderFailure, Result, Settings

# What the kernel needs to join the cluster: its address, and Ray's token authentication if it is on.
JOIN = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")


@ray.remote(num_cpus=0, max_retries=0)
def grade_on_a_node(name: str, notebook: bytes, exercise: Exercise, settings: Settings) -> tuple[Result, str]:
    """Grade one submission on this node; returns its Result and the node's name."""
    from tools import grade

    with tempfile.TemporaryDirectory(prefix="lab-grade-task-") as folder:
        path = Path(folder) / f"{name}.ipynb"
        path.write_bytes(notebook)
        result = grade.grade_with_retries(name, path, exercise, settings)
    return result, socket.gethostname() + ":" + ray.get_runtime_context().get_node_id()[:8]


def grade_all(pending, exercise, settings, recorder) -> None:
    joining = tuple((key, os.environ[key]) for key in JOIN if key in os.environ)
    settings = dataclasses.replace(settings, environment=settings.environment + joining, own_user=False)
    ray.init(
        address=os.environ["RAY_ADDRESS"],
        runtime_env={"py_modules": [str(Path(tools.__file__).parent)]},
        logging_level="WARNING",
    )
    try:
        nodes = len([node for node in ray.nodes() if node["Alive"]])
        print(
            f"grading {len(pending)} submission(s) over the Ray cluster at {os.environ['RAY_ADDRESS']} "
            f"({nodes} node(s))",
            flush=True,
        )
        confinement = Sandbox.confinement(settings.limits, own_user=False)
        print(f"each submission runs as {confinement} (as on this machine, on each node)", flush=True)
        task = grade_on_a_node.options(memory=settings.limits.memory_bytes, scheduling_strategy="SPREAD")
        running = {
            task.remote(each.label, each.copy.read_bytes(), exercise, settings): each for each in pending
        }
        while running:
            [done], _ = ray.wait(list(running), num_returns=1)
            each = running.pop(done)
            try:
                result, node = ray.get(done)
            except (ray.exceptions.RayError, GraderFailure) as error:
                recorder.failed(each, error)
                continue
            recorder.graded(each, result, where=node)
    finally:
        ray.shutdown()
