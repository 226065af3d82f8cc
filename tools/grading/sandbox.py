"""Where one submission runs: a temporary folder of its own, an allow-listed environment, limits, and,
when the grader runs as root, a user id and a view of the file system of its own.

    folder/        root-owned (0711): the connection file, the kernel's log, the jail's config
      home/        HOME                                     (these three: the submission's user's)
      work/        the kernel's working directory
      t/           TMPDIR: Ray's sockets and logs too
      lab/         a copy of the lab code the notebook imports (PYTHONPATH), read-only to it
      observations/  where the self-checks write what they observed (LAB_OBSERVATIONS), the submission's
      mlflow/      the grader's MLflow server for this submission (not readable by the submission)

As root (`sudo make grade`, CI), the kernel runs through tools/grading/jail.py as a user id of its
own (leased from UID_RANGE; no passwd entry, no groups), in a mount namespace where the checkout is
hidden; its processes are confined by cgroups (memory and task caps) where the machine has them,
and by rlimits (memory per process, CPU seconds per process, file size, processes per user). As
another user, only the folder, the environment and the rlimits apply: the kernel runs as that user.
"""

import contextlib
import errno
import fcntl
import json
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from labkit import ray_settings
from tools import REPO
from tools.grading import cgroups, judging
from tools.grading.exercise import LabCode

JAIL = Path(__file__).with_name("jail.py")
PREFIX = "lab-grade-"  # of the folders and cgroups a grader makes: lab-grade-<its pid>-...
UID_RANGE = range(61000, 61500)
LEASES = Path(tempfile.gettempdir()) / "lab-grade-uids"  # one lock file per uid in use
MARKER = "LAB_GRADE_SANDBOX"  # in every kernel's environment: finds its processes without cgroups
PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 6 << 30  # for the submission (cgroup), and for each of its processes (rlimit)
    tasks: int = 4096  # processes and threads (Ray's daemons run dozens of threads each)
    cpu_seconds: int = 1800  # CPU time, for the submission (cgroup v2) and each process (rlimit)
    file_bytes: int = 2 << 30  # the largest file a process may write


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def processes_of(uid: int, zombies: bool = False) -> list[psutil.Process]:
    """The processes that run as uid (zombies, which only wait for their parent to reap them, when asked)."""
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        if process.info["uids"] and process.info["uids"].real == uid:
            if zombies or process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


def reap_adopted(wanted) -> None:
    """Reap this process's zombie children for which wanted(process) holds: a subreaper adopts the
    processes of a kernel that died, and their zombies count against the user's process limit."""

    def wanted_zombie(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE and wanted(process)
        except psutil.NoSuchProcess:  # reaped meanwhile, by the thread that grades another submission
            return False

    for _ in range(50):
        zombies = [p for p in psutil.Process().children() if wanted_zombie(p)]
        for process in zombies:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(process.pid, 0)
        if not zombies:
            return
        time.sleep(0.05)


class UidLease:
    """A user id from UID_RANGE that no other grader holds (an flock on its file, released when
    the grader exits, however it exits), that no account owns and that no process runs as: the
    leftovers of a grader that was killed are killed first, and a uid whose zombies another process
    has yet to reap is passed over (they would count against its process limit)."""

    def __init__(self):
        LEASES.mkdir(mode=0o700, exist_ok=True)
        for uid in UID_RANGE:
            with contextlib.suppress(KeyError):
                pwd.getpwuid(uid)
                continue  # an account's
            handle = open(LEASES / str(uid), "w")  # noqa: SIM115 (held until release)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self.uid, self._handle = uid, handle
            self.kill_processes()
            if not processes_of(uid, zombies=True):
                return
            handle.close()
        raise RuntimeError(f"no free user id in {UID_RANGE}")

    def processes(self) -> list[psutil.Process]:
        return processes_of(self.uid)

    def kill_processes(self, timeout: float = 10) -> None:
        """Every process of the uid: kill(-1) from a process of that uid reaches them all at once."""
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            subprocess.run(
                ["kill", "-s", "KILL", "--", "-1"], user=self.uid, group=self.uid, extra_groups=[],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )  # fmt: skip
            time.sleep(0.05)
        reap_adopted(lambda process: process.uids().real == self.uid)

    def release(self) -> None:
        self.kill_processes()
        self._handle.close()


def hidden_folders() -> list[tuple[str, list[str]]]:
    """What the kernel must not see (the checkout, solution included), and what it needs under it:
    the Python it runs (this venv, as named and resolved, and the installation it is made from). A
    folder on the way to those that others may not enter (a 0700 home) is hidden too, the same way."""
    needed = {Path(sys.executable).parent.parent, Path(sys.prefix), Path(sys.prefix).resolve(),
              Path(sys.base_prefix).resolve()}  # fmt: skip
    hide = {REPO.resolve()}
    for path in needed:
        for folder in path.parents:
            if folder != Path("/") and not folder.stat().st_mode & 0o001:
                hide.add(folder)
    outermost = [h for h in hide if not any(other != h and other in h.parents for other in hide)]
    return [
        (str(folder), sorted(str(p) for p in needed if folder in p.parents)) for folder in sorted(outermost)
    ]


class Sandbox:
    """One submission's confinement, for as long as the `with` block: folders made on entry, every
    process it started killed and everything removed on exit."""

    def __init__(self, lab: LabCode, limits: Limits, environment: dict[str, str], own_user: bool = True):
        self.lab, self.limits, self.environment = lab, limits, environment
        self.root_mode = own_user and is_root()
        self.lease: UidLease | None = None
        self.groups: cgroups.Cgroups | None = None

    def __enter__(self) -> "Sandbox":
        # A short path: Ray's socket paths under TMPDIR must stay under 108 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir="/tmp"))
        self.token = self.folder.name  # names its cgroups and marks its processes
        try:
            self._build(self.token)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self, name: str) -> None:
        self.folder.chmod(0o711)
        self.home, self.work, self.tmp = self.folder / "home", self.folder / "work", self.folder / "t"
        self.lab_folder, self.mlflow = self.folder / "lab", self.folder / "mlflow"
        self.observations = self.folder / "observations"
        self.lab.write(self.lab_folder)  # read-only to the submission
        self.mlflow.mkdir(mode=0o700)
        if self.root_mode:
            self.lease = UidLease()
        for folder in (self.home, self.work, self.tmp, self.observations):
            folder.mkdir(mode=0o700)
            if self.lease:
                os.chown(folder, self.lease.uid, self.lease.uid)
        self.groups = cgroups.Cgroups.create(name, self.limits.memory_bytes, self.limits.tasks)
        self.connection_file = self.folder / "kernel.json"
        self.log = self.folder / "kernel.log"
        config = {
            "cgroup_procs": self.groups.procs_files() if self.groups else [],
            "rlimits": self._rlimits(),
            "cwd": str(self.work),
            "uid": self.lease.uid if self.lease else None,
            "hide": hidden_folders() if self.lease else [],
            "stage": str(self.folder / "stage"),
            "connection_file": str(self.connection_file),
        }
        self.config = self.folder / "jail.json"
        self.config.write_text(json.dumps(config))

    def _rlimits(self) -> dict[str, int]:
        limits = {
            "RLIMIT_DATA": self.limits.memory_bytes,  # one process over it: a MemoryError in the cell
            "RLIMIT_CPU": self.limits.cpu_seconds,
            "RLIMIT_FSIZE": self.limits.file_bytes,
            "RLIMIT_CORE": 0,
        }
        if self.lease:  # counted per user: only a user of its own makes it a cap on this submission
            limits["RLIMIT_NPROC"] = self.limits.tasks
        return {name: value for name, value in limits.items() if hasattr(resource, name)}

    @property
    def env(self) -> dict[str, str]:
        """The kernel's whole environment: what the notebook needs, nothing of the grader's."""
        return {
            "PATH": f"{Path(sys.executable).parent}:{PATH}",
            "HOME": str(self.home),
            "USER": "student",  # getpass.getuser(), for a user id without a passwd entry
            "LOGNAME": "student",
            "TMPDIR": str(self.tmp),  # Ray's sockets and logs go there too (a short path)
            "PYTHONPATH": str(self.lab_folder),
            judging.VARIABLE: str(self.observations),
            "LANG": "C.UTF-8",
            "RAY_USAGE_STATS_ENABLED": "0",
            **ray_settings.ENVIRONMENT,  # the lab's Ray settings, as `make lab` gives them
            # Ray sizes its object store (shared memory, charged to the submission) as 30% of the
            # machine's memory; a store larger than the submission's cap hangs Ray's start.
            "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": f"{0.3 * self._share_of_memory():.4f}",
            MARKER: self.token,
            **self.environment,
        }

    def _share_of_memory(self) -> float:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return min(1.0, self.limits.memory_bytes / physical)

    @property
    def command_prefix(self) -> list[str]:
        return [sys.executable, "-I", "-S", str(JAIL), str(self.config), "--"]

    def stop_processes(self) -> None:
        """Kill every process of the submission, wherever it went (fork loops and Ray's daemons too),
        and reap those that the grader, a subreaper, adopted when their parent died."""
        killed = set()
        if self.groups:
            killed |= self.groups.pids()
            self.groups.kill_all()
        if self.lease:
            self.lease.kill_processes()
        else:  # the kernel runs as this user: its processes are found by their mark
            for process in psutil.process_iter(["uids"]):
                with contextlib.suppress(psutil.Error):
                    if (
                        process.info["uids"].real == os.getuid()
                        and process.environ().get(MARKER) == self.token
                    ):
                        process.send_signal(signal.SIGKILL)
                        killed.add(process.pid)
        reap_adopted(lambda process: process.pid in killed)

    def run_inside(self, argv: list[str], timeout: float = 60, input: str | None = None):
        """Run a trusted program of the grader's (argv, from the grader's checkout) where it reaches what
        the submission reaches on its loopback (its MLflow server): as the grader's user, with the
        grader's environment. Returns the completed process, its output as text."""
        return subprocess.run(argv, cwd=REPO, input=input, capture_output=True, text=True, timeout=timeout)

    def oom_kills(self) -> int:
        return self.groups.oom_kills() if self.groups else 0

    def cpu_seconds(self) -> float | None:
        return self.groups.cpu_seconds() if self.groups else None

    @classmethod
    def confinement(cls, limits: Limits, own_user: bool = True) -> str:
        """What this machine lets the grader do to confine a submission, in words."""
        with cls(LabCode({}), limits, {}, own_user) as probe:
            return probe.describe()

    def describe(self) -> str:
        who = "a user id of its own, the checkout hidden" if self.lease else "the grader's user (not root)"
        caps = self.groups.describe() if self.groups else "no cgroups"
        return f"{who}; {caps}; rlimits {', '.join(self._rlimits())}"

    def __exit__(self, *exc) -> None:
        self.stop_processes()
        if self.groups:
            self.groups.remove()
        if self.lease:
            self.lease.release()
        lab = self.folder / "lab"  # read-only: as another user than root, its owner could not empty it
        for folder in [lab, *lab.rglob("*")] if lab.exists() else []:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(self.folder, ignore_errors=True)


def remove_stale() -> None:
    """What graders that were killed left: their cgroups (and processes) and folders."""

    def alive(pid: int) -> bool:
        return psutil.pid_exists(pid)

    cgroups.remove_stale(PREFIX, alive)
    for folder in Path("/tmp").glob(f"{PREFIX}*"):
        owner = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        if owner.isdigit() and not alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
