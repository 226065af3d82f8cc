"""Control groups for one submission: every process it starts is counted, capped and killed together.

Linux offers two kinds. cgroup v2 (one tree, /sys/fs/cgroup on current distributions) tracks the
processes, kills them all at once (cgroup.kill) and counts their CPU time (cpu.stat); it caps memory
and tasks where its memory and pids controllers can be enabled below the grader's own group. cgroup
v1 (one tree per controller, as on this lab's CI machines) caps memory and tasks where v2 cannot.
Each submission also gets a CPU share of its own (v2 cpu.weight, v1 cpu.shares; the same for every
submission), so that one spinning on every core slows its neighbours to their share, no further.
What this process may create is used and `describe()` says what that was; where nothing can be made
(no root, no delegation), `create` returns None and the grader relies on rlimits alone.

A submission's groups hold one group per part (`child`: its kernel, its MLflow server), so that a
part can be killed alone while the caps, the share and the count cover them all.
"""

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
MEMBERSHIP = Path("/proc/self/cgroup")
CONTROLS = {  # controller -> its file in v2, in v1
    "memory": ("memory.max", "memory.limit_in_bytes"),
    "pids": ("pids.max", "pids.max"),
    "cpu": ("cpu.weight", "cpu.shares"),
}
CPU_SHARE = {"v2": 100, "v1": 1024}  # the default weight: what matters is that every submission has it


def _own_groups() -> tuple[Path | None, dict[str, Path]]:
    """This process's own v2 group folder, and its v1 group folder per controller."""
    mounts_v2, mounts_v1 = None, {}
    with contextlib.suppress(OSError):
        for line in MOUNTINFO.read_text().splitlines():
            before, _, after = line.partition(" - ")
            mount_point, (fstype, _source, options) = Path(before.split()[4]), after.split()[:3]
            if fstype == "cgroup2":
                mounts_v2 = mount_point
            elif fstype == "cgroup":
                mounts_v1.update(dict.fromkeys(options.split(","), mount_point))
    own_v2, own_v1 = None, {}
    with contextlib.suppress(OSError):
        for line in MEMBERSHIP.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if not controllers and mounts_v2 is not None:
                own_v2 = mounts_v2 / path.lstrip("/")
            for controller in controllers.split(","):
                if controller in mounts_v1:
                    own_v1[controller] = mounts_v1[controller] / path.lstrip("/")
    return own_v2, own_v1


def _read_key(path: Path, key: str) -> int | None:
    """The value of `key` in a flat-keyed cgroup file (cpu.stat, memory.events, ...)."""
    with contextlib.suppress(OSError, ValueError):
        for line in path.read_text().splitlines():
            name, value = line.split()
            if name == key:
                return int(value)
    return None


@dataclass
class Cgroups:
    """The groups made for one submission (removed, with what is left in them, by `remove`)."""

    unified: Path | None = None  # its v2 group: tracking, killing, CPU time, and caps where enabled
    v1: dict[str, Path] = field(default_factory=dict)  # controller -> its v1 group
    capped: dict[str, str] = field(default_factory=dict)  # "memory"/"pids" capped, "cpu" shared -> "v2"/"v1"

    @classmethod
    def create(cls, name: str, memory_bytes: int, tasks: int) -> "Cgroups | None":
        own_v2, own_v1 = _own_groups()
        made = cls()
        if own_v2 is not None:
            with contextlib.suppress(OSError):
                (own_v2 / name).mkdir()
                made.unified = own_v2 / name
        limits = {"memory": {"v2": memory_bytes, "v1": memory_bytes}, "pids": {"v2": tasks, "v1": tasks}}
        for controller, value in {**limits, "cpu": CPU_SHARE}.items():
            if made.unified is not None:
                with contextlib.suppress(OSError):  # refused unless the parent may hand it down
                    (own_v2 / "cgroup.subtree_control").write_text(f"+{controller}")
                    (made.unified / CONTROLS[controller][0]).write_text(str(value["v2"]))
                    made.capped[controller] = "v2"
                    continue
            if controller in own_v1:
                with contextlib.suppress(OSError):
                    (own_v1[controller] / name).mkdir()
                    made.v1[controller] = own_v1[controller] / name
                    (made.v1[controller] / CONTROLS[controller][1]).write_text(str(value["v1"]))
                    made.capped[controller] = "v1"
        if made.capped.get("memory") == "v1":  # no swap either, where the kernel accounts for it
            with contextlib.suppress(OSError):
                (made.v1["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        if made.capped.get("memory") == "v2":
            with contextlib.suppress(OSError):
                (made.unified / "memory.swap.max").write_text("0")
        return made if made.unified or made.v1 else None

    def child(self, name: str) -> "Cgroups":
        """A group below these, in each of their trees: its processes count against these groups' caps
        and share, and it can be killed alone."""
        below = Cgroups(capped=self.capped)
        if self.unified is not None:
            (self.unified / name).mkdir(exist_ok=True)
            below.unified = self.unified / name
        for controller, folder in self.v1.items():
            (folder / name).mkdir(exist_ok=True)
            below.v1[controller] = folder / name
        return below

    def folders(self) -> list[Path]:
        return [folder for folder in (self.unified, *self.v1.values()) if folder is not None]

    def procs_files(self) -> list[str]:
        """The files a process writes its pid into to join every group (the jail does, before exec)."""
        return [str(folder / "cgroup.procs") for folder in self.folders()]

    def pids(self) -> set[int]:
        return _pids(self.folders())

    def cpu_seconds(self) -> float | None:
        """CPU time the groups' processes used so far (v2 counts it without a controller)."""
        usage = _read_key(self.unified / "cpu.stat", "usage_usec") if self.unified else None
        return usage / 1e6 if usage is not None else None

    def oom_kills(self) -> int:
        """How many of the groups' processes the kernel killed for going over the memory cap (v2
        counts them in the group that holds the cap, v1 in the victim's own)."""
        if self.capped.get("memory") == "v2":
            return _read_key(self.unified / "memory.events", "oom_kill") or 0
        if self.capped.get("memory") == "v1":
            groups = _tree([self.v1["memory"]])
            return sum(_read_key(folder / "memory.oom_control", "oom_kill") or 0 for folder in groups)
        return 0

    def peak_memory(self) -> int | None:
        """The most memory the group used at once, in bytes."""
        where = {
            "v2": (self.unified, "memory.peak"),
            "v1": (self.v1.get("memory"), "memory.max_usage_in_bytes"),
        }
        folder, file = where.get(self.capped.get("memory"), (None, ""))
        with contextlib.suppress(OSError, ValueError, TypeError):
            return int((folder / file).read_text())
        return None

    def kill_all(self, timeout: float = 10) -> None:
        """SIGKILL every process in the groups and those below until none is left (a fork loop included)."""
        _kill_group(self.folders(), timeout)

    def remove(self) -> None:
        self.kill_all()
        for folder in self.folders():
            _remove_group(folder)

    def describe(self) -> str:
        caps = [f"{what} ({version})" for what, version in self.capped.items() if what != "cpu"]
        share = (
            f"a CPU share ({self.capped['cpu']})" if "cpu" in self.capped
            else "no CPU share (no cpu controller: --jobs > 1 share the CPU unfairly)"
        )  # fmt: skip
        return f"cgroups: processes tracked, {', '.join(caps) or 'nothing capped'}, {share}"


def _tree(folders: list[Path]) -> list[Path]:
    """The groups and every group below them."""
    found = []
    for folder in folders:
        for path, _, _ in os.walk(folder):
            found.append(Path(path))
    return found


def _pids(folders: list[Path]) -> set[int]:
    found = set()
    for folder in _tree(folders):
        with contextlib.suppress(OSError, ValueError):
            found |= {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}
    return found


def _kill_group(folders: list[Path], timeout: float) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            (folder / "cgroup.kill").write_text("1")  # v2: the whole subtree at once, where the kernel has it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _pids(folders)
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _remove_group(folder: Path) -> None:
    for below in reversed(_tree([folder])):  # the deepest first
        for _ in range(100):  # a killed process leaves its group a moment after it dies
            try:
                below.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def remove_stale(prefix: str, alive) -> None:
    """Empty and remove groups named `<prefix><pid>-...` that a grader now gone (alive(pid) false)
    left behind when it was killed."""
    own_v2, own_v1 = _own_groups()
    for parent in {own_v2, *own_v1.values()} - {None}:
        with contextlib.suppress(OSError):
            for folder in parent.glob(f"{prefix}*"):
                owner = folder.name.removeprefix(prefix).split("-", 1)[0]
                if owner.isdigit() and not alive(int(owner)):
                    _kill_group([folder], timeout=10)
                    _remove_group(folder)
