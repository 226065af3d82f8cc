"""Keep track of the processes a tool starts (kernels, Ray, servers) and stop the ones left behind,
each by its own pid: used by the test harness and the grader."""

import ctypes
import sys

import psutil


def become_subreaper() -> None:
    """Adopt orphaned descendants (e.g. Ray's daemons when a kernel dies) so they can be stopped."""
    PR_SET_CHILD_SUBREAPER = 36
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def descendants() -> set[int]:
    return {process.pid for process in psutil.Process().children(recursive=True)}


def stop_descendants(keep: set[int] = frozenset(), timeout: float = 10) -> None:
    """Stop this process's descendants, except the pids in `keep`: SIGTERM, then SIGKILL."""
    leftovers = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
    for process in leftovers:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(leftovers, timeout=timeout)
    for process in alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)
