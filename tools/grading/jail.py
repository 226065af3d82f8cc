"""Start a part of a submission (its kernel, its MLflow server) confined:
`python -I -S jail.py CONFIG.json -- COMMAND...`.

Run in place of the command (tools/grading/sandbox.py writes CONFIG), as the grader's user. It joins
the part's cgroups and sets its rlimits; when the grader is root, it enters the submission's
namespaces, which bubblewrap made when the sandbox was built (mount: the machine's system folders
and Python read-only, the submission's folder, a private /tmp, /var/tmp and /dev/shm; network: a
loopback of its own; pid; IPC), after checking that they are the ones the sandbox recorded; then it
becomes the submission's user (no groups, no way back to root), with a session keyring of its own and
that user's kernel keyrings emptied (they outlive its processes: the next submission leased the same
user id would find what this one left there). In a pid namespace only a child can
live, so it forks: the child execs COMMAND, this process waits for it and exits as it did (an
interrupt, sent to the process group, is the child's; a termination is passed on). Without
namespaces it execs COMMAND itself. Standard library only: it runs before the kernel, outside the
lab's environment.
"""

import ctypes
import json
import os
import resource
import signal
import sys

NAMESPACES = {"ipc": 0x08000000, "net": 0x40000000, "pid": 0x20000000, "mnt": 0x00020000}  # mnt last
PR_SET_NO_NEW_PRIVS = 38
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)  # keyctl(2), no libc wrapper
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_CLEAR, KEYCTL_GET_PERSISTENT = 1, 7, 22
USER_KEYRING, USER_SESSION_KEYRING, PROCESS_KEYRING = -4, -5, -2

libc = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def enter(holder: int, expected: dict[str, int]) -> None:
    """Enter the namespaces of the process `holder`, each checked against the inode recorded for it (a
    pid reused by another process would otherwise lead elsewhere)."""
    files = {name: os.open(f"/proc/{holder}/ns/{name}", os.O_RDONLY) for name in NAMESPACES}
    for name, fd in files.items():
        if os.fstat(fd).st_ino != expected[name]:
            raise RuntimeError(f"the sandbox's {name} namespace is gone (process {holder} is another)")
    for name, flag in NAMESPACES.items():
        checked(libc.setns(files[name], flag), f"setns {name}")
        os.close(files[name])


def fresh_keyrings() -> None:
    """A new session keyring (not the grader's), and the user's own keyrings (user, user session,
    persistent; where the kernel has them) emptied."""
    if SYS_KEYCTL is None:
        return
    libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None)
    persistent = libc.syscall(SYS_KEYCTL, KEYCTL_GET_PERSISTENT, -1, PROCESS_KEYRING)
    for keyring in (USER_KEYRING, USER_SESSION_KEYRING, *([persistent] if persistent > 0 else [])):
        libc.syscall(SYS_KEYCTL, KEYCTL_CLEAR, keyring)


def wait_for(child: int) -> None:
    """Wait for the child and exit as it did; pass a termination on to it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the child's, through the process group
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, lambda number, _frame: os.kill(child, number))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    config_path, separator, *command = argv
    assert separator == "--" and command, "usage: jail.py CONFIG.json -- COMMAND..."
    with open(config_path) as file:
        config = json.load(file)
    for procs in config["cgroup_procs"]:
        with open(procs, "w") as file:
            file.write(str(os.getpid()))
    for name, value in config["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    namespaces, uid = config.get("namespaces"), config.get("uid")
    if namespaces:
        enter(namespaces["holder"], namespaces["inodes"])
    if uid is not None:
        for path in config.get("own", []):
            os.chown(path, uid, uid)
        checked(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        fresh_keyrings()
    if namespaces:
        child = os.fork()
        if child:
            wait_for(child)
    os.chdir(config["cwd"])
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
