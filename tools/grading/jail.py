"""Start a student's kernel confined: `python -I -S jail.py CONFIG.json -- KERNEL COMMAND...`.

Run by the kernel manager in place of the kernel command (tools/grading/sandbox.py writes CONFIG),
as the grader's user. It joins the submission's cgroups, sets its rlimits and, when the grader is
root, gives the kernel a mount namespace of its own in which the checkout (and any folder it cannot
see but must run Python from) is hidden under an empty tmpfs, with only the Python installation
bound back; then it becomes the submission's user (no groups, no way back to root) and execs the
kernel command. Standard library only: it runs before the kernel, outside the lab's environment.
"""

import ctypes
import json
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL(None, use_errno=True)


def checked(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None):
    encode = lambda text: text.encode() if text is not None else None  # noqa: E731
    checked(
        libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}"
    )


def hide(folder: str, keep: list[str], stage: str) -> None:
    """An empty tmpfs over folder, with the paths in keep (under folder) bound back at their place."""
    staged = []
    for index, path in enumerate(keep):
        spot = os.path.join(stage, str(index))
        os.makedirs(spot, exist_ok=True)
        mount(path, spot, None, MS_BIND | MS_REC)  # reachable once folder is covered
        staged.append((spot, path))
    mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for spot, path in staged:
        os.makedirs(path, exist_ok=True)
        mount(spot, path, None, MS_BIND | MS_REC)
        checked(libc.umount2(spot.encode(), MNT_DETACH), f"umount {spot}")


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
    uid = config.get("uid")
    if uid is not None:
        checked(libc.unshare(CLONE_NEWNS), "unshare")
        mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back out
        for folder, keep in config["hide"]:
            hide(folder, keep, config["stage"])
        os.chown(config["connection_file"], uid, uid)
        checked(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    os.chdir(config["cwd"])
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
