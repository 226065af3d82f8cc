"""tools.notebooks, the lab's one notebook runner, on small notebooks and snippets made for the test:
cells found by their tags, tagged cells run in this process (what the logging benchmark does), and
code run piece by piece in a fresh kernel: errors as the kernel reports them, a time limit per piece
(an interrupt, then the kernel killed), a kernel started through a launcher."""

import sys
from textwrap import dedent

import nbformat
import pytest

from tools.notebooks import KERNEL_DIED, TIMED_OUT, KernelStartError, cell_tagged, kernel, load_cells


def notebook(*cells) -> nbformat.NotebookNode:
    """A notebook of (source, tags) code cells."""
    made = nbformat.v4.new_notebook()
    made.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": list(tags)}) for source, tags in cells]
    return made


def test_load_cells_runs_only_the_tagged_cells_in_order(tmp_path):
    path = tmp_path / "small.ipynb"
    cells = [("x = 1", ["bench"]), ("raise RuntimeError('untagged')", []), ("y = x + 1", ["bench", "other"])]
    nbformat.write(notebook(*cells), path)
    namespace = load_cells(path, "bench")
    assert (namespace["x"], namespace["y"]) == (1, 2)
    assert namespace["__name__"] == "small", "functions must not look importable, so that Ray ships them"
    with pytest.raises(LookupError, match="no cell tagged 'missing'"):
        load_cells(path, "missing")


def test_cell_tagged_wants_exactly_one_cell():
    small = notebook(("a = 1", ["first-sweep"]), ("b = 2", ["twice"]), ("c = 3", ["twice"]))
    assert cell_tagged(small, "first-sweep") == 0
    for tag in ("twice", "missing"):
        with pytest.raises(LookupError, match=tag):
            cell_tagged(small, tag)


STUBBORN = dedent("""\
    import time
    while True:
        try:
            time.sleep(0.1)
        except KeyboardInterrupt:
            pass""")


def test_a_kernel_runs_code_reports_errors_and_stops_what_runs_too_long(tmp_path):
    with kernel(tmp_path, timeout=2, interrupt_grace=2) as run:
        assert run("x = 6 * 7\nprint(x)").outputs[0]["text"] == "42\n"
        assert run("1 / 0").error == "ZeroDivisionError: division by zero"
        # Errors come from the kernel's reply: code that silences their display does not hide them.
        run("get_ipython().set_custom_exc((Exception,), lambda *args, **kwargs: None)")
        assert run("1 / 0").error_name == "ZeroDivisionError"
        looping = run("import time\nwhile True:\n    time.sleep(0.1)")
        assert (looping.error_name, looping.error_value) == (
            TIMED_OUT,
            "ran longer than its time limit (2 s)",
        )
        assert run("x").error == "", "an interrupt leaves the kernel and its variables"
        stubborn = run(STUBBORN)
        assert stubborn.error_name == TIMED_OUT and 4 <= stubborn.seconds < 15
        assert run("x").error == f"{KERNEL_DIED}: it ignored the interrupt (2 s)"
        assert run.dead


def test_a_kernel_starts_through_a_launcher_with_the_environment_given(tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, sys\nos.environ['LAUNCHED'] = 'yes'\nos.execv(sys.argv[1], sys.argv[1:])\n"
    )
    env = {"PATH": "/usr/bin:/bin", "ONLY": "this"}
    with kernel(
        tmp_path, env=env, command_prefix=[sys.executable, str(launcher)], log=tmp_path / "log"
    ) as run:
        seen = run("import os\nprint(sorted(os.environ), os.getcwd())").outputs[0]["text"]
    assert "'LAUNCHED'" in seen and "'ONLY'" in seen and str(tmp_path) in seen
    assert (tmp_path / "log").exists()


def test_a_kernel_that_dies_as_it_starts_is_an_error_that_shows_its_log(tmp_path):
    launcher = [sys.executable, "-c", "import sys; sys.exit('the launcher gave up')"]
    with pytest.raises(KernelStartError, match="died before replying") as error:
        with kernel(tmp_path, command_prefix=launcher, log=tmp_path / "log", startup_timeout=30):
            pytest.fail("no kernel started")
    assert error.value.log == "the launcher gave up"
