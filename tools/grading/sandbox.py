"""Where one submission runs: a temporary folder of its own, an allow-listed environment, limits, and,
when the grader runs as root, a user id, a file system view and a network of its own, shared by its
kernel and its MLflow server and nothing else.

    folder/        root-owned (0711): the jail's configs, the kernel's connection file and log, the
                   server's log
      home/        HOME                                     (these: the submission's user's)
      work/        the kernel's working directory
      t/           TMPDIR: Ray's sockets and logs too
      mlflow/      its MLflow server's database and artifacts
      ipc<n>/      the sockets of its n-th kernel (the grader's once the kernel listens on them)
      observations/  where the self-checks write what they observed (LAB_OBSERVATIONS)
      lab/         a copy of the lab code the notebook imports (PYTHONPATH), read-only to it

As root (`sudo make grade`, CI), the kernel and the server run through tools/grading/jail.py as a
user id of its own (leased from UID_RANGE; no passwd entry, no groups), in namespaces that bubblewrap
makes for the submission (`Namespaces`): a mount namespace that holds the machine's system folders and
the Python installation read-only, the submission's folder, and a private /tmp, /var/tmp and /dev/shm
(nothing else: not the checkout, not other submissions, not the grader's files); a network namespace
with a loopback of its own (the kernel talks to the grader over Unix sockets in its folder, the grader
reaches the server from inside the namespace); a pid and an IPC namespace. Their processes are
confined by cgroups (memory and task caps, a CPU share) where the machine has them, and by rlimits
(memory per process, CPU seconds per process, file size, processes per user). As another user, or on
a Ray cluster, only the folder, the environment, the cgroups and the rlimits apply: the kernel and
the server run as the grader's user, on the machine's loopback.
"""

import contextlib
import ctypes
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
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from labkit import ray_settings
from tools import REPO, mlflow_server
from tools.grading import cgroups, judging
from tools.grading.exercise import LabCode

JAIL = Path(__file__).with_name("jail.py")
PREFIX = "lab-grade-"  # of the folders and cgroups a grader makes: lab-grade-<its pid>-...
UID_RANGE = range(61000, 61500)
LEASES = Path(tempfile.gettempdir()) / "lab-grade-uids"  # one lock file per uid in use
MARKER = "LAB_GRADE_SANDBOX"  # in the environment of its kernel and server: finds them without cgroups
PATH = "/usr/local/bin:/usr/bin:/bin"
BWRAP = "bwrap"  # bubblewrap (Debian's bubblewrap package; `make bubblewrap`)
SERVER_PORT = 5000  # the MLflow server's, in the submission's network namespace, where nothing else listens
CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(RuntimeError):
    """The machine cannot give a submission the sandbox it should have (as root: bubblewrap's)."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 6 << 30  # for the submission (cgroup), and for each of its processes (rlimit)
    tasks: int = 4096  # processes and threads (Ray's daemons run dozens of threads each)
    cpu_seconds: int = 1800  # CPU time, for the submission (cgroup v2) and each process (rlimit)
    file_bytes: int = 2 << 30  # the largest file a process may write
    output_bytes: int = 1 << 20  # the output of a cell the grader keeps (the rest is counted, not kept)


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


def bubblewrap() -> str | None:
    """bubblewrap's path, where it is installed."""
    return shutil.which(BWRAP, path=PATH)


def python_folders() -> list[Path]:
    """The Python the kernel and the server run: this venv, as named and resolved, and the installation
    it is made from, without those inside another of them or in the system folders already bound."""
    needed = {Path(sys.executable).parent.parent, Path(sys.prefix), Path(sys.prefix).resolve(),
              Path(sys.base_prefix).resolve()}  # fmt: skip
    system = {Path("/usr"), Path("/etc")}
    return sorted(
        path for path in needed
        if not any(other in path.parents for other in needed | system) and path not in system
    )  # fmt: skip


def view(folder: Path) -> list[str]:
    """bubblewrap's arguments for what a submission sees: the system folders, the Python installation
    and the sandbox's folder, a private /tmp, /var/tmp and /dev/shm (mode 1777), its own /proc and
    /dev; the rest of the machine (the checkout, /home, /root, other submissions) is not there."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--ro-bind", "/sys", "/sys"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += ["--proc", "/proc", "--dev", "/dev", "--dir", "/var"]
    for private in ("/tmp", "/var/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--tmpfs", private]
    made = {Path("/"), Path("/tmp"), Path("/var")}
    for path in [*python_folders(), folder]:
        for parent in reversed(path.parents):  # bubblewrap would make them 0700
            if parent not in made:
                args += ["--dir", str(parent)]
                made.add(parent)
        args += ["--bind" if path == folder else "--ro-bind", str(path), str(path)]
        made.add(path)
    return args


class Namespaces:
    """A submission's namespaces (mount, network, pid, IPC), made by bubblewrap around a process that only
    holds them; the jail enters them to start the kernel and the server. Killing the holder ends them,
    with every process left inside; so does the grader's death (bubblewrap's --die-with-parent)."""

    NAMES = ("ipc", "net", "pid", "mnt")

    def __init__(self, folder: Path):
        command = [
            bubblewrap(), "--die-with-parent", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--cap-drop", "ALL", *view(folder),
        ]  # fmt: skip
        read, write = os.pipe()
        with open(folder / "bubblewrap.log", "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--info-fd", str(write), "--", "sleep", "infinity"], pass_fds=(write,),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={"PATH": PATH},
            )  # fmt: skip
        os.close(write)
        with os.fdopen(read, "rb") as info:
            written = info.read()  # bubblewrap closes it once the namespaces are made
        if not written:
            self.process.wait()
            error = (folder / "bubblewrap.log").read_text(errors="replace").strip()
            raise SandboxError(f"bubblewrap failed: {error or f'exit status {self.process.returncode}'}")
        info = json.loads(written)
        self.holder = info["child-pid"]
        self.inodes = {name: info[f"{name}-namespace"] for name in self.NAMES}
        self._pidfd = os.pidfd_open(self.holder)
        self._net = os.open(f"/proc/{self.holder}/ns/net", os.O_RDONLY)
        if os.fstat(self._net).st_ino != self.inodes["net"]:
            self.stop()
            raise SandboxError("bubblewrap's namespace holder exited at once")

    def config(self) -> dict:
        """What the jail needs to enter them."""
        return {"holder": self.holder, "inodes": self.inodes}

    def in_network(self, function):
        """function() run in a thread of this process that joined the network namespace: the sockets it
        opens and the processes it starts are in there (this process's other threads are not)."""
        outcome = {}

        def run():
            try:
                if libc.setns(self._net, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns into the submission's network")
                outcome["value"] = function()
            except BaseException as error:  # noqa: BLE001 (raised again in the caller's thread)
                outcome["error"] = error

        thread = threading.Thread(target=run, name="in-the-submission's-network")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def stop(self, timeout: float = 10) -> None:
        """Kill the holder: the pid namespace ends, and every process in it is killed, once those whose
        parent is outside it are reaped."""
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):  # left to the grader's end, rather than hang
            self.process.wait(timeout)
        for fd in (self._pidfd, self._net):
            with contextlib.suppress(OSError):
                os.close(fd)


class Sandbox:
    """One submission's confinement, for as long as the `with` block: folders (and, as root, namespaces)
    made on entry; its kernels started with `kernel_options()`, its MLflow server with
    `start_server()`; every process it started killed and everything removed on exit."""

    def __init__(self, lab: LabCode, limits: Limits, environment: dict[str, str], own_user: bool = True):
        self.lab, self.limits, self.environment = lab, limits, environment
        self.root_mode = own_user and is_root()
        self.on_cluster = not own_user
        self.lease: UidLease | None = None
        self.groups: cgroups.Cgroups | None = None
        self.kernel_groups: cgroups.Cgroups | None = None
        self.namespaces: Namespaces | None = None
        self.server: subprocess.Popen | None = None
        self.server_url: str | None = None
        self.kernels = 0

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
        if self.root_mode:
            self.lease = UidLease()
        for folder in (self.home, self.work, self.tmp, self.mlflow, self.observations):
            self._own(folder)
        self.groups = cgroups.Cgroups.create(name, self.limits.memory_bytes, self.limits.tasks)
        self.kernel_groups = self.groups.child("kernel") if self.groups else None
        self.connection_file = self.folder / "kernel.json"
        self.log, self.server_log = self.folder / "kernel.log", self.folder / "server.log"
        if self.root_mode:  # a user id without namespaces could not even run Python from a 0700 home
            if bubblewrap() is None:
                raise SandboxError(
                    "bubblewrap (bwrap) is not installed: as root, the grader sandboxes each submission "
                    "with it. Install it (make bubblewrap, or apt-get install bubblewrap) and grade again."
                )
            self.namespaces = Namespaces(self.folder)

    def _own(self, folder: Path) -> None:
        """A folder of the submission's user (the grader's, when there is no such user)."""
        folder.mkdir(mode=0o700)
        if self.lease:
            os.chown(folder, self.lease.uid, self.lease.uid)

    def _jail(self, part: str, groups: cgroups.Cgroups | None, cwd: Path, own: list[str]) -> list[str]:
        """The command prefix that starts a part of the submission (its kernel, its server) confined."""
        config = {
            "cgroup_procs": groups.procs_files() if groups else [],
            "rlimits": self._rlimits(),
            "cwd": str(cwd),
            "uid": self.lease.uid if self.lease else None,
            "namespaces": self.namespaces.config() if self.namespaces else None,
            "own": own if self.lease else [],
        }
        path = self.folder / f"jail-{part}.json"
        path.write_text(json.dumps(config))
        return [sys.executable, "-I", "-S", str(JAIL), str(path), "--"]

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
            **self._base_env(),
            "USER": "student",  # getpass.getuser(), for a user id without a passwd entry
            "LOGNAME": "student",
            "PYTHONPATH": str(self.lab_folder),
            judging.VARIABLE: str(self.observations),
            "RAY_USAGE_STATS_ENABLED": "0",
            **ray_settings.ENVIRONMENT,  # the lab's Ray settings, as `make lab` gives them
            # Ray sizes its object store (shared memory, charged to the submission) as 30% of the
            # machine's memory; a store larger than the submission's cap hangs Ray's start.
            "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": f"{0.3 * self._share_of_memory():.4f}",
            MARKER: self.token,
            **self.environment,
        }

    def _base_env(self) -> dict[str, str]:
        return {
            "PATH": f"{Path(sys.executable).parent}:{PATH}",
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),  # Ray's sockets and logs go there too (a short path)
            "LANG": "C.UTF-8",
        }

    def _share_of_memory(self) -> float:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return min(1.0, self.limits.memory_bytes / physical)

    # --- the kernel ---------------------------------------------------------------------------------

    def kernel_options(self) -> dict:
        """How tools.notebooks.kernel starts a fresh kernel of this submission (besides its folder,
        time limits and environment): through the jail, stopped with stop_kernel; in a network of
        its own, connected to the grader over Unix sockets in the submission's folder, which become
        the grader's once the kernel listens on them (so that the kernel cannot swap them)."""
        self.kernels += 1
        jail = self._jail("kernel", self.kernel_groups, self.work, own=[str(self.connection_file)])
        options = {
            "command_prefix": jail,
            "connection_file": self.connection_file,
            "stop_processes": self.stop_kernel,
            "log": self.log,
            "output_limit": self.limits.output_bytes,
        }
        if self.namespaces:
            sockets = self.folder / f"ipc{self.kernels}"
            self._own(sockets)
            options.update(transport="ipc", ip=str(sockets / "kernel"), on_start=lambda: _seal(sockets))
        return options

    def stop_kernel(self) -> None:
        """Kill the kernel and every process it started, wherever it went (fork loops and Ray's daemons
        too), not the server; reap those that the grader, a subreaper, adopted when their parent died."""
        if self.kernel_groups:
            killed = self.kernel_groups.pids()
            self.kernel_groups.kill_all()
        else:
            killed = self._kill_marked(lambda mark: mark == self.token)
        reap_adopted(lambda process: process.pid in killed)

    def _kill_marked(self, wanted) -> set[int]:
        """Kill the processes whose mark satisfies wanted(mark): the way to find them without cgroups."""
        killed, users = set(), {os.getuid(), self.lease.uid if self.lease else None}
        for process in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if process.info["uids"].real in users and wanted(process.environ().get(MARKER, "")):
                    process.send_signal(signal.SIGKILL)
                    killed.add(process.pid)
        return killed

    # --- the MLflow server ----------------------------------------------------------------------------

    def start_server(self) -> str:
        """Start the submission's MLflow server beside its kernel (same user, cgroups and namespaces),
        serving its folder's mlflow/; its URL, which the kernel's environment gets too."""
        port = SERVER_PORT if self.namespaces else mlflow_server.free_port()
        self.server_url = f"http://{mlflow_server.HOST}:{port}"
        groups = self.groups.child("server") if self.groups else None
        self.server = mlflow_server.start(
            port, self.mlflow, self.server_log, launcher=self._jail("server", groups, self.mlflow, own=[]),
            env={**self._base_env(), MARKER: f"{self.token}-server"},
        )  # fmt: skip
        self.environment["MLFLOW_TRACKING_URI"] = self.server_url
        return self.server_url

    def wait_for_server(self, timeout: float = 90) -> None:
        """Block until the server answers; raises mlflow_server.ServerError with its log if it does not."""
        inside = self.namespaces.in_network if self.namespaces else None
        mlflow_server.wait_until_healthy(self.server_url, self.server, self.server_log, timeout, inside)

    def server_stopped(self) -> bool:
        """Whether the server was started and is no longer running (the watchdog asks)."""
        return self.server is not None and self.server.poll() is not None

    def stop_server(self) -> None:
        if self.server is not None:
            mlflow_server.stop(self.server)

    def run_inside(
        self, argv: list[str], timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a trusted program of the grader's where it reaches the submission's loopback (its MLflow
        server): in the submission's network namespace only, as the grader's user, with the grader's
        environment and files, from the checkout; `input` on its stdin, its output captured as text."""

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(
                argv, cwd=REPO, input=input, capture_output=True, text=True, timeout=timeout
            )

        return self.namespaces.in_network(run) if self.namespaces else run()

    # --- the whole submission -------------------------------------------------------------------------

    def stop_processes(self) -> None:
        """Kill every process of the submission (its kernel, its server, what they started), reap those
        the grader adopted, then end its namespaces. (A kernel or server whose jail process died is the
        grader's to reap, a subreaper's; its namespaces cannot end before it is reaped.)"""
        killed = set()
        if self.groups:
            killed |= self.groups.pids()
            self.groups.kill_all()
        if self.lease:
            self.lease.kill_processes()
        else:
            killed |= self._kill_marked(lambda mark: mark.startswith(self.token))
        reap_adopted(lambda process: process.pid in killed)
        if self.namespaces:
            self.namespaces.stop()

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
        if self.namespaces:
            who = (
                "a user id of its own, in namespaces of its own (bubblewrap): the checkout and the rest "
                "of the machine out of sight, a private /tmp and /dev/shm, a network of its own (loopback "
                "only) shared with its MLflow server"
            )
        else:
            why = (
                "on a Ray cluster: the kernel must reach the cluster's sockets"
                if self.on_cluster
                else "not root"
            )
            who = (
                f"the grader's user ({why}): no user id or namespaces of its own, it reads what the "
                "grader may, shares /tmp, /dev/shm and the loopback"
            )
        caps = self.groups.describe() if self.groups else "no cgroups (--jobs > 1 share the CPU unfairly)"
        return f"{who}; {caps}; rlimits {', '.join(self._rlimits())}"

    def __exit__(self, *exc) -> None:
        self.stop_server()
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


def _seal(sockets: Path) -> None:
    """The kernel's socket folder made the grader's: the kernel cannot replace what the grader talks to."""
    os.chown(sockets, os.getuid(), os.getgid())
    sockets.chmod(0o711)


def remove_stale() -> None:
    """What graders that were killed left: their cgroups (and processes) and folders."""

    def alive(pid: int) -> bool:
        return psutil.pid_exists(pid)

    cgroups.remove_stale(PREFIX, alive)
    for folder in Path("/tmp").glob(f"{PREFIX}*"):
        owner = folder.name.removeprefix(PREFIX).split("-", 1)[0]
        if owner.isdigit() and not alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
