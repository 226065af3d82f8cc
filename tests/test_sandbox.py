"""The grader's sandbox (tools/grading/sandbox.py) tried as a student probing what it leaves shared:
the file system beyond the submission's folder, other submissions' loopback and the machine's, the
grader's processes, what a submission leaves in /tmp for the next, the output a cell sends; then,
graded as `make grade` grades (slow): a submission spinning on every core beside another, and one
that reads files through its own MLflow server and deletes the runs of any other it finds.

The tests that need namespaces run as root with bubblewrap (`make bubblewrap`), as CI does."""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import nbformat
import psutil
import pytest

from tests.test_grade import SOLUTION, grade_args, make_notebook, read_rows, write_exercise
from tools import REPO, grade
from tools.grading import cgroups, sandbox
from tools.grading.exercise import LabCode
from tools.grading.sandbox import Limits, Sandbox
from tools.notebooks import kernel

NAMESPACES = sandbox.is_root() and sandbox.bubblewrap() is not None
WHY_NOT = "a submission's namespaces need root and bubblewrap (make bubblewrap)"
needs_namespaces = pytest.mark.skipif(not NAMESPACES, reason=WHY_NOT)
LIMITS = Limits(memory_bytes=1 << 30, tasks=64, output_bytes=10_000)
PORT = sandbox.SERVER_PORT  # where the first sandbox listens, in its own network
LISTENER = """\
import socket
server = socket.create_server(("127.0.0.1", PORT))
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"hello from the first sandbox")
    connection.close()
"""
WHAT_IT_SEES = """\
import glob, json, os, socket
commands = []
for path in glob.glob("/proc/[0-9]*/cmdline"):
    with open(path, "rb") as file:
        commands.append(file.read().replace(b"\\0", b" ").decode(errors="replace"))
print(json.dumps({
    "checkout": os.path.exists(CHECKOUT), "tests' folder": os.path.exists(TESTS_FOLDER),
    "tmp": os.listdir("/tmp"), "var_tmp": os.listdir("/var/tmp"), "shm": os.listdir("/dev/shm"),
    "interfaces": [name for _, name in socket.if_nameindex()],
    "grader's processes": [command for command in commands if "pytest" in command or NEIGHBOUR in command],
    "uid": os.getuid(),
}))
"""
SERVERS_IT_FINDS = """\
import glob, json, re, socket
listening = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A":  # LISTEN
            listening.add(int(fields[1].rsplit(":", 1)[1], 16))
named = set()
for path in glob.glob("/proc/[0-9]*/cmdline"):
    with open(path, "rb") as file:
        named |= {int(port) for port in re.findall(rb"--port\\0(\\d+)", file.read())}
reachable = []
for port in PORTS:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        reachable.append(port)
    except OSError:
        pass
print(json.dumps({"listening": sorted(listening), "named": sorted(named), "reachable": reachable}))
"""


def with_values(source: str, **values) -> str:
    """source, after lines that bind the names given to their values."""
    return "".join(f"{name} = {value!r}\n" for name, value in values.items()) + source


def report(run, source: str, **values) -> dict:
    """What source printed in the kernel, as JSON."""
    outcome = run(with_values(source, **values))
    assert not outcome.error, outcome.error
    return json.loads("".join(output.get("text", "") for output in outcome.outputs))


def confined(box: Sandbox, *command: str, run=subprocess.run, **options):
    """A command run as the submission's kernel is (its jail: user, namespaces, cgroups, rlimits), its
    output captured (a CompletedProcess; a Popen with run=subprocess.Popen)."""
    prefix = box.kernel_options()["command_prefix"]
    box.connection_file.touch()  # the jail gives it to the submission's user
    return run(
        [*prefix, *command], env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
    )


def loopback_listeners() -> set[int]:
    """The TCP ports that listen on this machine's loopback (the session's MLflow server's, at least)."""
    everywhere = ("127.0.0.1", "0.0.0.0", "::1", "::")
    return {
        connection.laddr.port
        for connection in psutil.net_connections("tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.ip in everywhere
    }


def greeting(port: int) -> bytes:
    """What a connection to the port on this machine's loopback receives first (nothing if refused)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            return connection.recv(100)
    except OSError:
        return b""


@pytest.fixture(scope="module")
def neighbours():
    """Two sandboxes side by side: in the first a process of the submission's listens on its loopback,
    in the second a kernel runs."""
    if not NAMESPACES:
        pytest.skip(WHY_NOT)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(Sandbox(LabCode({}), LIMITS, {}))
        listener = confined(
            first, sys.executable, "-c", with_values(LISTENER, PORT=PORT), run=subprocess.Popen
        )
        stack.callback(lambda: (listener.kill(), listener.wait(), listener.stdout.close()))
        assert listener.stdout.readline().strip() == "listening"
        second = stack.enter_context(Sandbox(LabCode({}), LIMITS, {}))
        run = stack.enter_context(kernel(second.work, 30, second.env, **second.kernel_options()))
        yield first, second, run


def test_a_kernel_sees_the_system_its_folder_and_none_of_the_machine(neighbours, tmp_path_factory):
    first, second, run = neighbours
    seen = report(
        run, WHAT_IT_SEES, CHECKOUT=str(REPO / "ray_tune_solution.ipynb"),
        TESTS_FOLDER=str(tmp_path_factory.getbasetemp()), NEIGHBOUR=first.token,
    )  # fmt: skip
    assert seen == {
        "checkout": False, "tests' folder": False, "tmp": [second.folder.name], "var_tmp": [], "shm": [],
        "interfaces": ["lo"], "grader's processes": [], "uid": second.lease.uid,
    }  # fmt: skip


def test_a_submission_that_searches_for_other_servers_finds_none_and_reaches_none(neighbours):
    """Neither the first sandbox's listener nor anything listening on this machine's loopback (the
    session's MLflow server) is listed in the second, named in its processes' command lines, or
    reachable from it."""
    _, _, run = neighbours
    machine = loopback_listeners()
    assert machine, "nothing listens on this machine's loopback: the probe would prove nothing"
    found = report(run, SERVERS_IT_FINDS, PORTS=sorted(machine | {PORT}))
    assert PORT not in found.pop("listening")  # what listens there is its kernel's own (ipykernel's)
    assert found == {"named": [], "reachable": []}


def test_the_grader_reaches_a_submissions_loopback_from_inside_as_itself(neighbours, monkeypatch):
    """run_inside (the judging half's way to the submission's MLflow server): the submission's
    network, the grader's user, environment and files; this machine's loopback does not lead there."""
    first, _, _ = neighbours
    monkeypatch.setenv("GRADER_ONLY", "yes")
    probe = dedent(f"""\
        import os, socket
        with socket.create_connection(("127.0.0.1", {PORT}), timeout=5) as connection:
            print(connection.recv(100).decode())
        print(os.getuid(), os.environ.get("GRADER_ONLY"), os.path.exists("tools/grading/sandbox.py"))""")
    done = first.run_inside([sys.executable, "-c", probe], timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hello from the first sandbox", f"{os.getuid()} yes True"]
    assert greeting(PORT) != b"hello from the first sandbox"


def test_the_kernels_sockets_are_the_graders_once_it_listens(neighbours):
    """The kernel cannot swap the Unix sockets the grader talks to it through (for a link elsewhere)."""
    _, second, run = neighbours
    sockets = second.folder / f"ipc{second.kernels}"
    assert sockets.stat().st_uid == os.getuid() and len(list(sockets.iterdir())) == 5
    moved = report(
        run, "import json, os\ntry:\n    os.rename(SOCKET, MOVED)\n    print('true')\nexcept OSError:\n"
        "    print('false')", SOCKET=str(sockets / "kernel-1"), MOVED=str(sockets / "moved"),
    )  # fmt: skip
    assert moved is False


def test_a_cell_keeps_the_beginning_of_its_output_and_counts_the_rest(tmp_path):
    """Many short lines, then one message of 5 MB: the runner keeps 10 kB of each cell's output."""
    cells = [("for _ in range(1000):\n    print('x' * 999)", "kB"), ("print('y' * 5_000_000)", "MB")]
    with kernel(tmp_path, 30, output_limit=10_000) as run:
        for source, more in cells:
            outcome = run(source)
            assert not outcome.error, outcome.error
            *kept, note = [output.get("text", "") for output in outcome.outputs]
            assert 9_000 < sum(map(len, kept)) <= 10_000
            assert re.fullmatch(rf"\.\.\. [\d.]+ {more} more output not kept\n", note), note


KEYS = """\
import ctypes, json, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY, KEYCTL = {"x86_64": (248, 250), "aarch64": (217, 219)}[os.uname().machine]
KEYRINGS = {"session": -3, "user": -4, "user session": -5}
if sys.argv[1] == "leave":
    for place in ("/tmp", "/var/tmp", "/dev/shm"):
        with open(f"{place}/note", "w") as file:
            file.write("left")
    for name, keyring in KEYRINGS.items():
        assert libc.syscall(ADD_KEY, b"user", b"note", b"left", 4, keyring) > 0, name
    subprocess.Popen(["sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
else:
    print(json.dumps({
        "files": [place for place in ("/tmp", "/var/tmp", "/dev/shm") if os.path.exists(f"{place}/note")],
        "keys": [name for name, keyring in KEYRINGS.items()
                 if libc.syscall(KEYCTL, 10, keyring, b"user", b"note", 0) > 0],  # KEYCTL_SEARCH
    }))
"""


@needs_namespaces
def test_what_a_submission_leaves_in_tmp_shared_memory_or_keyrings_does_not_reach_the_next():
    """What it leaves in /tmp, /var/tmp, /dev/shm and the kernel's keyrings (which outlive a user's
    processes): its next process finds no key, the next submission (the same user id, when no other
    grader holds it) neither key nor file. Leaving the sandbox ends its namespaces and processes and
    removes its cgroups and folder."""
    with Sandbox(LabCode({}), LIMITS, {}) as box:
        assert confined(box, sys.executable, "-c", KEYS, "leave", timeout=30).returncode == 0
        later = json.loads(confined(box, sys.executable, "-c", KEYS, "look", timeout=30).stdout)
        processes = [psutil.Process(box.namespaces.holder), *box.lease.processes()]
        assert any(process.name() == "sleep" for process in processes)
        groups = box.groups.folders()
    assert later == {"files": ["/tmp", "/var/tmp", "/dev/shm"], "keys": []}
    assert not any(process.is_running() for process in processes)
    assert not box.folder.exists() and not any(group.exists() for group in groups)
    with Sandbox(LabCode({}), LIMITS, {}) as box:
        found = json.loads(confined(box, sys.executable, "-c", KEYS, "look", timeout=30).stdout)
    assert found == {"files": [], "keys": []}


@needs_namespaces
def test_the_jail_refuses_namespaces_that_are_not_the_sandboxs(tmp_path):
    """A holder's pid reused by another process would lead elsewhere: the jail checks each namespace."""
    with Sandbox(LabCode({}), LIMITS, {}) as box:
        jail = box.kernel_options()["command_prefix"]
        config = json.loads(Path(jail[-2]).read_text())
        config["namespaces"]["holder"] = os.getpid()  # this process: the machine's namespaces
        (tmp_path / "jail.json").write_text(json.dumps(config))
        command = [*jail[:-2], str(tmp_path / "jail.json"), "--", "/bin/true"]
        refused = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "namespace is gone" in refused.stderr


def test_the_grader_says_what_the_machine_cannot_give(monkeypatch):
    limits = Limits(memory_bytes=1 << 30, tasks=64)
    on_a_cluster = Sandbox.confinement(limits, own_user=False)
    assert "the grader's user (on a Ray cluster: the kernel must reach the cluster's sockets)" in on_a_cluster
    without_cpu = cgroups.Cgroups(capped={"memory": "v1", "pids": "v1"}).describe()
    assert "no CPU share (no cpu controller: --jobs > 1 share the CPU unfairly)" in without_cpu


@pytest.mark.skipif(not sandbox.is_root(), reason="as another user, the grader needs no bubblewrap")
def test_as_root_without_bubblewrap_the_grader_says_so_and_grades_nothing(tmp_path, monkeypatch, capsys):
    reference, lab = write_exercise(tmp_path)
    nbformat.write(make_notebook(SOLUTION), tmp_path / "solution.ipynb")
    monkeypatch.setattr(sandbox, "bubblewrap", lambda: None)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out = tmp_path / "grades"
    assert grade.main([str(tmp_path / "solution.ipynb"), *grade_args(reference, lab, out)]) == 2
    assert "error: bubblewrap (bwrap) is not installed" in capsys.readouterr().err
    assert not (out / "grades.csv").exists() or read_rows(out / "grades.csv") == []


# --- graded as make grade grades ---------------------------------------------------------------------


@pytest.fixture
def on_this_machine(monkeypatch):
    """RAY_ADDRESS unset: with it set (the slow tier's cluster), `make grade` grades over that cluster."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def busy_share(seconds: float = 1.0) -> float:
    """The share of a core this process gets while it spins, right now."""
    start, cpu = time.monotonic(), time.process_time()
    while time.monotonic() - start < seconds:
        pass
    return (time.process_time() - cpu) / (time.monotonic() - start)


SPINNING = """\
import os
for _ in range(8 * os.cpu_count()):
    if os.fork() == 0:
        os.setsid()  # a session of its own: Linux's autogroups would otherwise share the CPU by session
        while True:
            pass"""
MEASURING = """\
start, cpu = time.monotonic(), time.process_time()
while time.monotonic() - start < 1:
    pass
share = (time.process_time() - cpu) / (time.monotonic() - start)
answer = 42 if share >= {least:.3f} else f"{{share:.2f}} of a core"
"""


def graded_rows(out: Path) -> dict[str, dict[str, tuple[bool, str]]]:
    """submission file name -> todo -> (passed, message)."""
    rows = {}
    for row in read_rows(out):
        verdict = (row["passed"] == "True", row["message"])
        rows.setdefault(Path(row["submission"]).name, {})[row["todo"]] = verdict
    return rows


@pytest.mark.slow
@needs_namespaces
def test_a_submission_spinning_on_every_core_leaves_its_neighbour_its_share(tmp_path, on_this_machine):
    """A submission forks 8 spinning processes per core, beside one that measures, in its first TODO, the
    share of a core it gets: at least 40% of what a process of this test gets alone just before (with a
    CPU share per submission, about all of it; without, one of 17 processes would get a ninth). Its
    grades beside the spinner are those it gets alone."""
    if not cgroups.Cgroups.create(f"{sandbox.PREFIX}{os.getpid()}-probe", 1 << 30, 64).capped.get("cpu"):
        pytest.skip("no cpu controller: --jobs > 1 share the CPU unfairly (the grader says so)")
    reference, lab = write_exercise(tmp_path)
    least = 0.4 * busy_share()
    measuring = make_notebook({**SOLUTION, "todo-1": MEASURING.format(least=least)})
    measuring.cells.insert(2, nbformat.v4.new_code_cell("time.sleep(2)  # the spinners start"))
    spinning = make_notebook(SOLUTION)
    spinning.cells[2:2] = [nbformat.v4.new_code_cell(s) for s in [SPINNING, *["time.sleep(3)"] * 4]]
    grades = {}
    for name, notebooks in [("alone", [measuring]), ("beside", [measuring, spinning])]:
        folder = tmp_path / name
        folder.mkdir()
        for stem, notebook in zip(["measuring", "spinning"], notebooks, strict=False):
            nbformat.write(notebook, folder / f"{stem}.ipynb")
        out = tmp_path / f"{name}-grades"
        args = grade_args(reference, lab, out, "--jobs", "2", "--time-limit", "60")
        assert grade.main([str(folder), *args]) == 0
        grades[name] = graded_rows(out / "grades.csv")["measuring.ipynb"]
    assert grades["beside"] == grades["alone"] == {f"todo-{k}": (True, "") for k in (1, 2, 3)}, grades


TRACKING_CHECKS = '''\
"""The self-checks of the synthetic tracking exercise, in the grader's protocol (tools/grading/judging.py):
the kernel observes which run the check is about, the judge decides on what the MLflow server holds."""

import json
import os

import mlflow
from mlflow.entities import ViewType


def logged(name):
    observed = {"name": name}
    folder = os.environ.get("LAB_OBSERVATIONS")
    if folder:
        with open(os.path.join(folder, "logged.json"), "w") as file:
            json.dump(observed, file)
    print(judge_logged(observed, logged_facts(mlflow.get_tracking_uri(), observed)))


def logged_facts(uri, observed):
    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(
        experiments, f"attributes.run_name = '{observed['name']}'", run_view_type=ViewType.ALL
    )
    return {"stages": [run.info.lifecycle_stage for run in runs]}


def judge_logged(observed, server):
    assert server["stages"], f"no run named {observed['name']!r}"
    assert "active" in server["stages"], f"run {observed['name']!r} must be in the 'active' state"
    return "OK: logged"


JUDGES = {"logged": judge_logged}
SERVER_FACTS = {"logged": logged_facts}
'''
TRACKING = [  # (tags, source): the synthetic tracking exercise
    ([], "import time\nimport mlflow\nimport tracklab.checks as check"),
    (["todo-1"], 'raise NotImplementedError("log a run named first")'),
    (["check-1"], 'check.logged("first")'),
    (["todo-2"], 'raise NotImplementedError("log a run named second")'),
    (["check-2"], 'check.logged("second")'),
]
LOGGED = "with mlflow.start_run(run_name={name!r}):\n    mlflow.log_metric('score', 1)"
TRACKED = {"todo-1": LOGGED.format(name="first"), "todo-2": LOGGED.format(name="second")}
ATTACK = """\
import glob, os, re, urllib.error, urllib.parse, urllib.request
own = os.environ["MLFLOW_TRACKING_URI"]
found = {}
# Its own server reads files for it: an experiment whose artifacts are a folder of its own, in which
# the run's artifact folder is a link to /.
client = mlflow.MlflowClient()
run = client.create_run(client.create_experiment("mine", artifact_location=os.path.abspath("arts")))
os.makedirs(f"arts/{run.info.run_id}")
os.symlink("/", f"arts/{run.info.run_id}/artifacts")
for secret in SECRETS:
    query = urllib.parse.urlencode({"path": secret.lstrip("/"), "run_uuid": run.info.run_id})
    try:
        with urllib.request.urlopen(f"{own}/get-artifact?{query}", timeout=10) as response:
            found[secret] = len(response.read())
    except urllib.error.HTTPError:
        pass
# Other MLflow servers, found in command lines and among listening sockets: their runs named "first"
# (the neighbour's) deleted, for 20 s.
def ports():
    listed = set()
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as file:
                listed |= {int(port) for port in re.findall(rb"--port\\0(\\d+)", file.read())}
        except OSError:
            pass
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            if line.split()[3] == "0A":
                listed.add(int(line.split()[1].rsplit(":", 1)[1], 16))
    return listed - {int(own.rsplit(":", 1)[1])}
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    for port in ports():
        other = f"http://127.0.0.1:{port}"
        try:
            if urllib.request.urlopen(f"{other}/health", timeout=1).read() != b"OK":
                continue
        except Exception:  # not HTTP
            continue
        found.setdefault("servers", set()).add(port)
        client = mlflow.MlflowClient(other)
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        for victim in client.search_runs(experiments, "attributes.run_name = 'first'"):
            client.delete_run(victim.info.run_id)
            found["runs deleted"] = found.get("runs deleted", 0) + 1
    time.sleep(0.5)
"""


def tracking_notebook(answers: dict, first: list[str] = (), pause: str = "") -> nbformat.NotebookNode:
    """The tracking exercise with answers (tag -> source), cells `first` before all, and `pause` between
    the first TODO and its self-check."""
    cells = [nbformat.v4.new_code_cell(source) for source in first]
    for tags, source in TRACKING:
        tag = tags[0] if tags else ""
        if tag == "check-1" and pause:
            cells.append(nbformat.v4.new_code_cell(pause))
        cells.append(nbformat.v4.new_code_cell(answers.get(tag, source), metadata={"tags": tags}))
    return nbformat.v4.new_notebook(cells=cells)


@pytest.mark.slow
@needs_namespaces
def test_a_submission_reads_no_file_through_its_server_nor_a_neighbours_runs(
    tmp_path, capsys, on_this_machine
):
    """Graded side by side: one submission kills its own kernel first (a fresh one goes on, its server
    untouched), asks its server for files through an artifact folder linked to /, and for 20 s deletes
    the runs named "first" of every other MLflow server it finds; beside it, a complete submission
    pauses 12 s between logging that run and its self-check. The first gets nothing and finds none
    (its TODO fails when it does); the second passes all."""
    (tmp_path / "lab" / "tracklab").mkdir(parents=True)
    (tmp_path / "lab" / "tracklab" / "__init__.py").write_text("")
    (tmp_path / "lab" / "tracklab" / "checks.py").write_text(TRACKING_CHECKS)
    reference = tmp_path / "exercise.ipynb"
    nbformat.write(tracking_notebook({}), reference)
    secrets = [str(REPO / "ray_tune_solution.ipynb"), str(tmp_path / "lab" / "tracklab" / "checks.py"),
               "/etc/shadow", f"/proc/{os.getpid()}/environ"]  # fmt: skip
    attack = with_values(ATTACK, SECRETS=secrets) + "assert not found, found\n" + TRACKED["todo-1"]
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    kill_itself = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    attacker = tracking_notebook({**TRACKED, "todo-1": attack}, first=[kill_itself])
    nbformat.write(attacker, submissions / "attacker.ipynb")
    nbformat.write(tracking_notebook(TRACKED, pause="time.sleep(12)"), submissions / "neighbour.ipynb")
    out = tmp_path / "grades"
    args = [
        "--reference", str(reference), "--lab-root", str(tmp_path / "lab"), "--out", str(out),
        "--cell-timeout", "60", "--time-limit", "300", "--memory", "2", "--tasks", "512", "--jobs", "2",
    ]  # fmt: skip
    assert grade.main([str(submissions), *args]) == 0
    assert "attempt 1 of 2" not in capsys.readouterr().err, "a server stopped under its submission"
    both = {todo: (True, "") for todo in ("todo-1", "todo-2")}
    assert graded_rows(out / "grades.csv") == {"attacker.ipynb": both, "neighbour.ipynb": both}
