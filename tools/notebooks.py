"""The lab's one notebook runner, used by the tests, the tools and the grader: notebooks run headless,
whole or up to a tagged cell, or code run piece by piece in a fresh kernel (per-piece time limit, then
an interrupt, then the kernel killed); and a notebook's tagged cells run in this process. (The tests'
walk through a solution is tests/walk.py.)"""

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets import Integer, List

from tools import REPO
from tools.mlflow_server import tail


def cell_tagged(notebook: nbformat.NotebookNode, tag: str) -> int:
    """The index of the one cell that carries `tag`."""
    found = [i for i, cell in enumerate(notebook.cells) if tag in cell.metadata.get("tags", [])]
    if len(found) != 1:
        raise LookupError(f"expected one cell tagged {tag!r}, found {len(found)}")
    return found[0]


def execute_notebook(path: Path, timeout: int = 900, until_tag: str | None = None) -> nbformat.NotebookNode:
    """Execute the notebook at path from the repo root, or only up to and including the cell tagged
    `until_tag`; raises CellExecutionError on failure. The kernel inherits this process's environment
    (MLFLOW_TRACKING_URI, SMOKE_TEST, RAY_ADDRESS). Returns the notebook with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    if until_tag is not None:
        notebook.cells = notebook.cells[: cell_tagged(notebook, until_tag) + 1]
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's code cells printed (their stream outputs)."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


# --- code run piece by piece in a fresh kernel ----------------------------------------------------

TIMED_OUT = "CellTimeout"  # Outcome.error_name of code stopped for running past its time limit
KERNEL_DIED = "KernelDied"  # ... of code whose kernel died (or was killed) while it ran, or before


@dataclass
class Outcome:
    """What one piece of code did in the kernel."""

    source: str
    seconds: float
    error_name: str = ""  # "" when it ran cleanly; TIMED_OUT or KERNEL_DIED when it was stopped
    error_value: str = ""
    outputs: list = field(default_factory=list)

    @property
    def error(self) -> str:
        return f"{self.error_name}: {self.error_value}" if self.error_name else ""


UNCAPPED = {"status", "execute_input", "clear_output"}  # messages that carry no output of the code's


def message_size(message: dict) -> int:
    """About how many bytes a kernel message holds: its strings' and buffers' lengths, 8 for any other
    value (counted without recursion: a deeply nested message is counted as well)."""
    size, pending = 0, [message.get("content"), *message.get("buffers", [])]
    while pending:
        value = pending.pop()
        if isinstance(value, str | bytes | bytearray | memoryview):
            size += len(value)
        elif isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple):
            pending += value
        else:
            size += 8
    return size


def amount(size: int) -> str:
    """A byte count for a person: 512 B, 3.2 MB, 4.0 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class KernelStartError(RuntimeError):
    """A fresh kernel died, or did not answer, before it could run any code; `log`: the end of its log."""

    def __init__(self, message: str, log: str):
        super().__init__(message)
        self.log = log


class CappedNotebookClient(NotebookClient):
    """A notebook client that keeps at most `output_limit` bytes of what a cell sends (outputs, display
    updates, widget messages), when set: the rest is counted in `dropped`, not kept."""

    output_limit = Integer(None, allow_none=True)

    def start_cell(self) -> None:
        self.kept = self.dropped = 0

    def process_message(self, msg, cell, cell_index):
        if self.output_limit is not None and msg["msg_type"] not in UNCAPPED:
            size, room = message_size(msg), self.output_limit - self.kept
            if size > room and msg["msg_type"] == "stream":  # the beginning of a long text is kept
                text = msg["content"]["text"]
                msg["content"]["text"], size = text[:room], room
                self.dropped += len(text) - room
            elif size > room:
                self.dropped += size
                return None
            self.kept += size
        return super().process_message(msg, cell, cell_index)


class PrefixedKernelManager(AsyncKernelManager):
    """A kernel manager that starts the kernel through a launcher: `command_prefix + kernel command`."""

    command_prefix = List([])

    def format_kernel_cmd(self, extra_arguments=None) -> list[str]:
        return [*self.command_prefix, *super().format_kernel_cmd(extra_arguments)]


class Kernel:
    """A running kernel; calling it with source code runs the code and returns its Outcome. An error
    in the code does not stop the kernel. Code that runs past its time limit is interrupted (the
    kernel's process group gets SIGINT, as Jupyter's stop button does); if it is still running
    `interrupt_grace` seconds later, the kernel is killed and every later call says so."""

    def __init__(self, client: CappedNotebookClient, timeout: float, interrupt_grace: float, stop_processes):
        self._client, self._timeout, self._grace = client, timeout, interrupt_grace
        self._stop_processes = stop_processes or self._stop_kernel_tree
        self._reply: dict | None = None
        self._killed = ""  # why kill() was called
        self._lock = threading.Lock()
        client.on_cell_executed = self._on_cell_executed

    def _on_cell_executed(self, cell, cell_index, execute_reply):
        self._reply = execute_reply

    @property
    def pid(self) -> int | None:
        provisioner = self._client.km.provisioner if self._client.km else None
        process = getattr(provisioner, "process", None)
        return process.pid if process else None

    @property
    def dead(self) -> str:
        """Why the kernel is gone ("" while it runs)."""
        return self._killed

    def __call__(self, source: str, timeout: float | None = None, store_history: bool = True) -> Outcome:
        timeout = self._timeout if timeout is None else timeout
        notebook = self._client.nb
        cell = nbformat.v4.new_code_cell(source)
        notebook.cells.append(cell)
        if self._killed:
            return Outcome(source, 0.0, KERNEL_DIED, self._killed)
        self._reply, interrupted = None, threading.Event()

        def interrupt():
            interrupted.set()
            self._signal_group(signal.SIGINT)

        timers = [
            threading.Timer(timeout, interrupt),
            threading.Timer(
                timeout + self._grace, self.kill, args=(f"it ignored the interrupt ({timeout:g} s)",)
            ),
        ]
        for timer in timers:
            timer.daemon = True
            timer.start()
        start = time.monotonic()
        self._client.start_cell()
        try:
            self._client.execute_cell(cell, len(notebook.cells) - 1, store_history=store_history)
        except DeadKernelError:
            self.kill("the kernel died")  # what it started may live on
        finally:
            for timer in timers:
                timer.cancel()
            for timer in timers:  # a kill under way ends before anything else starts (a fresh kernel)
                timer.join()
        if self._client.dropped:
            note = f"... {amount(self._client.dropped)} more output not kept\n"
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
        outcome = Outcome(source, time.monotonic() - start, outputs=cell.outputs)
        if interrupted.is_set():
            outcome.error_name, outcome.error_value = TIMED_OUT, self._too_long(timeout)
        elif self._killed:
            outcome.error_name, outcome.error_value = KERNEL_DIED, self._killed
        elif self._reply and self._reply["content"].get("status") == "error":
            content = self._reply["content"]  # the kernel's own word: outputs can be silenced
            outcome.error_name, outcome.error_value = content.get("ename", "Error"), content.get("evalue", "")
        return outcome

    @staticmethod
    def _too_long(timeout: float) -> str:
        return f"ran longer than its time limit ({timeout:g} s)"

    def _signal_group(self, signum: int) -> None:
        provisioner = self._client.km.provisioner if self._client.km else None
        pgid = getattr(provisioner, "pgid", None)
        with contextlib.suppress(OSError, TypeError):
            os.killpg(pgid, signum)

    def kill(self, reason: str) -> None:
        """Kill the kernel and what it started (thread-safe); the code running now ends with `reason`
        (or the reason given first)."""
        with self._lock:
            self._killed = self._killed or reason
        self._stop_processes()

    def _stop_kernel_tree(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
            for process in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        self._signal_group(signal.SIGKILL)


@contextlib.contextmanager
def kernel(
    cwd: Path = REPO,
    timeout: float = 600,
    env: dict | None = None,
    *,
    interrupt_grace: float = 10,
    command_prefix: list[str] = (),
    connection_file: Path | None = None,
    stop_processes: Callable[[], None] | None = None,
    startup_timeout: float = 120,
    log: Path | None = None,
    transport: str = "tcp",
    ip: str | None = None,
    on_start: Callable[[], None] | None = None,
    output_limit: int | None = None,
):
    """A fresh kernel started in cwd (with env, else this process's environment). Yields a Kernel:
    run = ...; run(source) executes source and returns its Outcome. A piece of code may run `timeout`
    seconds (run(source, timeout=...) for another limit). The kernel is started through
    `command_prefix` when given (a launcher that execs the kernel command after it), with its
    connection file at `connection_file`; `stop_processes` replaces how a kill stops the kernel and
    everything it started (by default: its process tree and process group). The kernel's own output
    (not its cells') goes to `log` when given, else to this process's. It listens on TCP ports of the
    loopback, or with transport="ipc" on Unix sockets named `ip`-1 to -5 (a kernel in another network
    namespace); `on_start()` runs once it answers, before any code. With `output_limit`, each piece of
    code keeps that many bytes of output at most, and a last line says how much more it sent. Raises
    KernelStartError (with the end of `log`) when the kernel dies or does not answer as it starts."""
    manager = PrefixedKernelManager(
        kernel_name="python3", command_prefix=list(command_prefix), transport=transport
    )
    if ip is not None:
        manager.ip = ip
    if connection_file is not None:
        manager.connection_file = str(connection_file)
    client = CappedNotebookClient(
        nbformat.v4.new_notebook(),
        km=manager,
        timeout=None,  # Kernel's own timers interrupt, then kill
        allow_errors=True,
        startup_timeout=startup_timeout,
        resources={"metadata": {"path": str(cwd)}},
        output_limit=output_limit,
    )
    options = {"env": env} if env is not None else {}
    with contextlib.ExitStack() as stack:
        if log is not None:
            output = stack.enter_context(open(log, "ab"))
            options.update(stdout=output, stderr=output)
        try:
            stack.enter_context(client.setup_kernel(cleanup_kc=True, **options))
        except (RuntimeError, TimeoutError) as error:  # nbclient's: it died, or did not answer
            raise KernelStartError(str(error), tail(log, 10) if log is not None else "") from None
        if on_start is not None:
            on_start()
        running = Kernel(client, timeout, interrupt_grace, stop_processes)
        try:
            yield running
        finally:
            if running.dead:
                running.kill(running.dead)  # what the dead kernel started, too


def load_cells(path: Path, tag: str) -> dict:
    """Execute, in this process and in order, the code cells of the notebook at path that carry `tag`,
    and return the namespace they leave: a script that measures what a notebook teaches runs the
    notebook's own code instead of a copy."""
    namespace = {"__name__": Path(path).stem}  # not importable: Ray ships its functions by value
    notebook = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if tag in cell.metadata.get("tags", [])]
    if not tagged:
        raise LookupError(f"{path} has no cell tagged {tag!r}")
    for index in tagged:
        exec(compile(notebook.cells[index].source, f"{path}, cell {index}", "exec"), namespace)
    return namespace
