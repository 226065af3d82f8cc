"""Write the folder an instructor gives students for a graded class.

    make handout                  # handout/ (git-ignored)
    make handout HANDOUT=~/course/week3

It holds what the exercise needs to run with `make lab`: the exercise (ray_tune.ipynb) and the lesson
it builds on (mlflow_tracking.ipynb), the lab code they import (labkit/, only the modules they use),
what `make lab` runs (tools/lab.py and the modules it imports, Jupyter Lab's settings),
requirements.txt, a Makefile with the targets that work there (lab, server, help, clean-venv), the
README's student part (the README's lines between `<!-- handout: leave out -->` and
`<!-- handout: end -->`, and lines ending in `<!-- not in the handout -->`, are left out), the files
the README and the notebooks link to (the UI screenshots, the documents for students under docs/, and
what those link to), and .gitignore. The data come with the
pinned packages (scikit-learn's digits).

It leaves out the solution, tests/ (tests/wrong_answers.py holds wrong answers, and right ones in
reach), benchmarks/ (they fill the TODOs with the solution), the grader and the other tools, and
diffusion.ipynb: it builds a search space, an ASHA scheduler and a Tuner the way TODOs 1, 3 and 4 ask
(hand it out after the deadline). Before it writes anything it checks that no file holds a line of a
TODO's answer (tools/make_exercise.answer_lines) and that every relative link resolves inside the
handout; it refuses otherwise, and refuses to replace a folder it did not write.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

from tools import REPO, make_exercise
from tools.grading.exercise import imports_in

NOTEBOOKS = ["mlflow_tracking.ipynb", make_exercise.EXERCISE.name]  # the lesson, then the exercise
ENTRY_POINTS = ["tools/lab.py"]  # what the Makefile's lab and server targets run
FILES = ["requirements.txt", ".gitignore", "tools/jupyterlab_settings/overrides.json"]  # read, not imported
PACKAGES = ("labkit", "tools")  # the lab's own code; everything else comes from requirements.txt
TARGETS = ("lab", "server", "help", "clean-venv", "$(INSTALLED)")  # the Makefile's targets that work there
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}  # what a link may bring along (a notebook it may not)
MARKER = ".lab-handout"  # in a folder this tool wrote, which it may replace
LEAVE_OUT, END = "<!-- handout: leave out -->", "<!-- handout: end -->"
NOT_HERE = "<!-- not in the handout -->"
# Lines of a TODO's answer that are plain Python the lesson before the exercise teaches, which the
# TODO's hint points to ("a temporary folder"): allowed there, and nowhere else.
TAUGHT = {"withtempfile.TemporaryDirectory()asfolder:": "mlflow_tracking.ipynb"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:src|href)=\"([^\"]+)\"")
MAKE_HEADER = """\
# The lab, as handed out: `make lab` sets up .venv, starts the MLflow server and Jupyter Lab.
# `make help` lists the targets.
"""


class HandoutError(Exception):
    """The handout would be wrong (an answer in it, a link out of it) or cannot be written there."""


def lab_modules(root: Path, sources: list[str]) -> set[str]:
    """The files of the lab's own modules (labkit, tools) that the sources import, and what those import."""
    found, queue = set(), list(sources)
    while queue:
        for module in imported(queue.pop()):
            parts = module.split(".")
            if parts[0] not in PACKAGES:
                continue
            for depth in range(1, len(parts) + 1):  # the package's __init__.py files, then the module
                for candidate in ("/".join(parts[:depth]) + "/__init__.py", "/".join(parts[:depth]) + ".py"):
                    if (root / candidate).is_file() and candidate not in found:
                        found.add(candidate)
                        queue.append((root / candidate).read_text())
    return found


def imported(source: str) -> set[str]:
    """The modules a piece of code imports (`from a import b` may import the module a.b)."""
    bound = imports_in(source).values()
    return {module for module, _ in bound} | {f"{module}.{name}" for module, name in bound if name}


def code_cells(path: Path) -> list[str]:
    return [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]


def student_readme(readme: str) -> str:
    """The README without its instructors' parts."""
    kept, leaving = [], False
    for line in readme.splitlines(keepends=True):
        if line.strip() == LEAVE_OUT:
            leaving = True
        elif line.strip() == END and leaving:
            leaving = False
        elif not leaving and not line.rstrip().endswith(NOT_HERE):
            kept.append(line)
    if leaving:
        raise HandoutError(f"README.md: {LEAVE_OUT} without {END}")
    return re.sub(r"\n{3,}", "\n\n", "".join(kept))


def makefile(text: str) -> str:
    """The Makefile with the targets that work in the handout, and the variables they use."""
    paragraphs = text.split("\n\n")
    rules = [p for p in paragraphs if rule_target(p) in TARGETS]
    variables = [line for line in paragraphs[0].splitlines() if not line.startswith("#")]
    used = "\n".join(rules)
    while True:  # the variables the rules use, and those these use
        kept = [line for line in variables if f"$({line.split()[0]})" in used]
        if "\n".join(kept) in used:
            break
        used += "\n" + "\n".join(kept)
    phony = ".PHONY: " + " ".join(target for target in TARGETS if not target.startswith("$"))
    return "\n\n".join([MAKE_HEADER + "\n".join(kept), phony, *rules]).rstrip() + "\n"


def rule_target(paragraph: str) -> str | None:
    """The target a Makefile paragraph (its comment lines, then the rule) defines."""
    for line in paragraph.splitlines():
        if not line.startswith("#"):
            match = re.match(r"([\w.$()-]+):(?!=)", line)
            return match[1] if match else None
    return None


def contents(root: Path) -> dict[str, bytes]:
    """The handout's files: relative path -> content."""
    sources = [(root / entry).read_text() for entry in ENTRY_POINTS]
    sources += [code for notebook in NOTEBOOKS for code in code_cells(root / notebook)]
    files = {name: (root / name).read_bytes() for name in [*NOTEBOOKS, *ENTRY_POINTS, *FILES]}
    files.update({name: (root / name).read_bytes() for name in lab_modules(root, sources)})
    files["README.md"] = student_readme((root / "README.md").read_text()).encode()
    files["Makefile"] = makefile((root / "Makefile").read_text()).encode()
    pages = [("README.md", files["README.md"].decode())]
    pages += [(name, markdown(nbformat.read(root / name, as_version=4))) for name in NOTEBOOKS]
    while pages:  # the images they show, and the documents they link to (with theirs)
        name, text = pages.pop()
        for target in relative_links(text):
            path = os.path.normpath(Path(name).parent / target)
            suffix = Path(path).suffix.lower()
            wanted = suffix in (*IMAGES, ".md") and not path.startswith("..") and (root / path).is_file()
            if not wanted or path in files:
                continue
            files[path] = (root / path).read_bytes()
            if suffix == ".md":
                pages.append((path, files[path].decode()))
    return files


def markdown(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def relative_links(text: str) -> list[str]:
    """The targets of the relative links and images in Markdown (or HTML) text, anchors cut."""
    targets = [next(group for group in match.groups() if group) for match in LINK.finditer(text)]
    return [target.split("#")[0] for target in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", target, re.I)]


def broken_links(files: dict[str, bytes]) -> list[str]:
    """Relative links in the handout's Markdown and notebooks to files it does not hold."""
    folders = {parent.as_posix() for name in files for parent in Path(name).parents}
    broken = []
    for name, content in files.items():
        if name.endswith(".md"):
            text = content.decode()
        elif name.endswith(".ipynb"):
            text = markdown(nbformat.reads(content.decode(), as_version=4))
        else:
            continue
        for target in relative_links(text):
            resolved = os.path.normpath(Path(name).parent / target)
            if resolved not in files and resolved not in folders:
                broken.append(f"{name} -> {target}")
    return broken


def searchable(name: str, content: bytes) -> str | None:
    """A file's text as answers would appear in it, without whitespace: a notebook's cell sources, a
    text file whole; None for a binary file."""
    try:
        text = content.decode()
    except UnicodeDecodeError:
        return None
    if name.endswith(".ipynb"):
        text = "\n".join(cell.source for cell in nbformat.reads(text, as_version=4).cells)
    return re.sub(r"\s+", "", text)


def answers_in(files: dict[str, bytes], answers: dict[str, list[str]]) -> list[str]:
    """Where the handout holds a line of a TODO's answer: "file: todo-k: line"."""
    found = []
    for name, content in files.items():
        text = searchable(name, content)
        if text is None:
            continue
        for todo, lines in answers.items():
            found += [
                f"{name}: {todo}: {line}" for line in lines if line in text and TAUGHT.get(line) != name
            ]
    return found


def build(root: Path, target: Path) -> list[str]:
    """Write the handout of the lab at root into target; returns the files written."""
    files = contents(root)
    leaks = answers_in(files, make_exercise.answer_lines(root / make_exercise.SOLUTION.name))
    if leaks:
        raise HandoutError("a file would hold a TODO's answer:\n  " + "\n  ".join(leaks))
    if broken := broken_links(files):
        raise HandoutError("a link would point out of the handout:\n  " + "\n  ".join(broken))
    target = target.absolute()
    if target.exists() and not (target / MARKER).is_file() and any(target.iterdir()):
        raise HandoutError(f"{target} exists, and is no handout this tool wrote: remove it, or pick another")
    if target == root.absolute() or root.absolute().is_relative_to(target):
        raise HandoutError(f"{target} holds the lab itself")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    for name, content in {
        **files,
        MARKER: b"Written by `make handout`, which replaces this folder.\n",
    }.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(content)
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # as any folder made plainly (a temporary one is 0700)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return sorted(files)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", type=Path, default=Path("handout"), help="the folder to write")
    args = parser.parse_args(argv)
    try:
        written = build(REPO, args.target)
    except HandoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.target}/ ({len(written)} files): " + ", ".join(written))
    print("students run `make lab` there; no solution, tests or answers in it (checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
