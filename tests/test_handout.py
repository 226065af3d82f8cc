"""`make handout`: the folder an instructor gives students holds what the exercise needs to run with
`make lab`, and no answer: every file grepped for each TODO's solution lines, no solution, tests,
benchmarks or grader, every relative link resolving inside it; the tool refuses an answer planted in
the lab's code. And `make help` lists every target of the lab's Makefile and of the handout's."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tools import REPO, handout, make_exercise

FORBIDDEN = ("ray_tune_solution.ipynb", "diffusion.ipynb", "tests/", "benchmarks/", "tools/grading/",
             "tools/grade.py", "tools/make_exercise.py", "tools/handout.py", ".ci/")  # fmt: skip


@pytest.fixture(scope="module")
def given(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("course") / "handout"
    assert handout.main([str(target)]) == 0
    return target


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def flat_text(path: Path) -> str | None:
    """What a reader of the file sees, without whitespace: a notebook's cells, a text file; None if binary."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        return None
    if path.suffix == ".ipynb":
        text = "\n".join("".join(cell["source"]) for cell in json.loads(text)["cells"])
    return re.sub(r"\s+", "", text)


def code_of(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    return [path.read_text()] if path.suffix == ".py" else []


def test_no_file_of_the_handout_holds_a_line_of_a_todos_answer(given):
    answers = make_exercise.answer_lines()
    assert sorted(answers) == [f"todo-{k}" for k in range(1, len(answers) + 1)] and all(answers.values()), (
        "every TODO has answer lines to look for"
    )
    found = []
    for name in files(given):
        text = flat_text(given / name)
        if text is not None:
            found += [(name, todo, line) for todo, lines in answers.items() for line in lines
                      if line in text and handout.TAUGHT.get(line) != name]  # fmt: skip
    assert not found
    assert "BEGINSOLUTION" not in "".join(flat_text(given / name) or "" for name in files(given))


def test_the_lines_allowed_as_taught_are_in_the_lesson_and_are_answer_lines():
    lesson = flat_text(REPO / "mlflow_tracking.ipynb")
    every_answer_line = {line for lines in make_exercise.answer_lines().values() for line in lines}
    assert all(line in lesson and line in every_answer_line for line in handout.TAUGHT)


def test_the_solution_tests_benchmarks_and_grader_are_not_there(given):
    names = files(given)
    assert not [name for name in names if name.startswith(FORBIDDEN)]
    assert {"ray_tune.ipynb", "mlflow_tracking.ipynb", "labkit/tuning_checks.py", "tools/lab.py"} <= set(
        names
    )


def test_what_the_notebooks_and_make_lab_import_from_the_lab_is_there(given):
    """Every lab module the handout's code imports is in it, and Python finds make lab's there."""
    held = set(files(given))
    for name in held:
        for source in code_of(given / name):
            for module in handout.imported(source):
                path = module.replace(".", "/") + ".py"
                if module.split(".")[0] in handout.PACKAGES and (REPO / path).is_file():
                    assert path in held, f"{name} imports {module}, which the handout lacks"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = "import tools.lab, labkit.ray_settings as s; print(tools.lab.__file__, s.__file__)"
    imported = subprocess.run(
        [sys.executable, "-c", probe], cwd=given, env=environment, capture_output=True, text=True
    )
    assert imported.returncode == 0, imported.stderr
    assert all(Path(path).is_relative_to(given) for path in imported.stdout.split())
    dry_run = subprocess.run(["make", "-n", "lab"], cwd=given, capture_output=True, text=True)
    assert dry_run.returncode == 0 and "-m tools.lab lab --port 8080" in dry_run.stdout, dry_run.stderr


def test_the_readme_is_the_students_part_and_every_link_resolves_inside(given):
    readme = (given / "README.md").read_text()
    assert "make lab" in readme and "make test" not in readme and "docs/grading.md" not in readme
    assert (given / "docs/troubleshooting.md").is_file(), "the students' troubleshooting goes along"
    assert not (given / "docs/grading.md").exists() and not (given / "docs/testing.md").exists()
    assert "<!--" not in readme.replace("<!-- not in the handout -->", "")
    for name in files(given):
        if name.endswith(".md"):
            text = (given / name).read_text()
        elif name.endswith(".ipynb"):
            cells = json.loads((given / name).read_text())["cells"]
            text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        else:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+:|#", target):
                assert (given / name).parent.joinpath(target.split("#")[0]).exists(), f"{name} -> {target}"


def make_help(folder: Path) -> dict[str, str]:
    listed = subprocess.run(["make", "-s", "help"], cwd=folder, capture_output=True, text=True, check=True)
    return dict(re.findall(r"^  make (\S+) +(\S.*)$", listed.stdout, re.M))


@pytest.mark.parametrize("where", ["lab", "handout"])
def test_make_help_lists_every_target_with_a_line(where, given):
    folder = REPO if where == "lab" else given
    makefile = (folder / "Makefile").read_text().replace("\\\n", " ")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M)[1].split()
    listed = make_help(folder)
    assert sorted(listed) == sorted(phony) and all(len(line) > 10 for line in listed.values())


def test_make_handout_refuses_an_answer_in_the_lab_code_a_link_out_and_a_folder_it_did_not_write(tmp_path):
    root = tmp_path / "lab"
    for name in [*handout.contents(REPO), "README.md", "Makefile", make_exercise.SOLUTION.name]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    with open(root / "labkit" / "tracking.py", "a") as planted:
        planted.write(
            "\n\ndef ask():\n    return ASHAScheduler(max_t=MAX_EPOCHS, grace_period=2, reduction_factor=3)\n"
        )
    with pytest.raises(handout.HandoutError, match=r"labkit/tracking.py: todo-4: returnASHAScheduler"):
        handout.build(root, tmp_path / "out")
    shutil.copy(REPO / "labkit" / "tracking.py", root / "labkit" / "tracking.py")
    with open(root / "README.md", "a") as readme:
        readme.write("\nSee [the solution](ray_tune_solution.ipynb).\n")
    with pytest.raises(handout.HandoutError, match=r"README.md -> ray_tune_solution.ipynb"):
        handout.build(root, tmp_path / "out")
    shutil.copy(REPO / "README.md", root / "README.md")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("my notes")
    with pytest.raises(handout.HandoutError, match="is no handout this tool wrote"):
        handout.build(root, tmp_path / "notes")
    assert handout.build(root, tmp_path / "out") and handout.build(root, tmp_path / "out"), (
        "it replaces its own"
    )
