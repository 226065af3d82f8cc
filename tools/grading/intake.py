"""What the grader is given, before anything runs: every file a submission with a student label, each
read once, safely, into a private copy that is what gets graded.

A folder given is searched for files; hidden ones (`.DS_Store`, `.ipynb_checkpoints/`), `__MACOSX/`
and the grader's own output are left out. A file directly in it is a student's: the label is its name
without `.ipynb` (`alice.ipynb` -> alice). A folder in it is a student's: its notebooks (`*.ipynb`,
at any depth) are what the student submitted, labelled with the folder's name (`bob/ray_tune.ipynb`
-> bob; with several, `bob__draft`, `bob__ray_tune`), its other files left alone; a student's folder
that holds no notebook is one submission that cannot be read. A file given by name is a student's
too. Labels are made safe for file names and unique: on a collision the name of the folder given goes
in front (`section1__alice`), then a number (`alice-2`).

Reading refuses, with a reason that becomes the submission's row: a symbolic link (inside a folder
or given by name; only a folder given by name is followed), anything that is not a regular file (a
FIFO, a device), an empty or too large file, and anything that is not a
notebook of this exercise (not JSON, JSON of another shape, a notebook with none of the exercise's
TODO cells). Such a submission gets 0 points and the status "unreadable", recorded once.
"""

import hashlib
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tools.grading import similarity
from tools.grading.exercise import TODO_TAG, Exercise, read_code_cells

MAX_BYTES = 100 << 20  # a notebook with its outputs is a few MiB
SKIPPED = {"__MACOSX"}  # macOS's archive litter
UNSAFE = re.compile(r"[^\w .@+-]+")  # what a label may not hold (it names the feedback file)
SUFFIX = ".ipynb"


class UsageError(Exception):
    """Nothing to grade, or a bad argument: printed without a traceback."""


@dataclass
class Submission:
    label: str  # the student, in every output
    path: Path  # the file (or, for a student's folder without a notebook, the folder)
    given: Path  # the folder or file named on the command line it was found through
    problem: str = ""  # why it cannot be graded ("" while none is known)
    sha256: str = ""
    copy: Path | None = None  # the private copy that is graded
    codes: dict[str, similarity.Code] = field(default_factory=dict)  # per TODO: attempted, digest

    @property
    def shown(self) -> str:
        """The path for the instructor's tables: relative to the current folder when below it."""
        try:
            return str(self.path.absolute().relative_to(Path.cwd()))
        except ValueError:
            return str(self.path)

    @property
    def file_name(self) -> str:
        return self.path.name


def find(paths: list[str], leave_out: list[Path]) -> list[Submission]:
    """The submissions among the files and folders given, in order, each with a unique label."""
    if not paths:
        raise UsageError('nothing to grade: make grade SUBMISSIONS="a.ipynb b.ipynb" (or a folder)')
    left_out = {path.absolute() for path in leave_out}
    found = []
    for given in map(Path, paths):
        if given.is_dir():  # a folder named on the command line is followed, even through a link
            students = in_folder(given, left_out)
            if not students:
                raise UsageError(f"{given}/ holds no notebooks (nothing to grade)")
            found += students
        elif given.is_symlink() or given.exists():
            found.append(Submission(file_label(given.name), given, given))
        else:
            raise UsageError(f"{given}: no such file or folder")
    return unique(found)


def in_folder(folder: Path, left_out: set[Path]) -> list[Submission]:
    """The submissions in a folder: a file directly in it is a student's, a folder in it is one."""
    students: dict[str, list[Path]] = {}  # a student's folder -> what it holds
    found = []
    for top, folders, names in os.walk(folder):  # links to folders are listed, not followed
        top = Path(top)
        entries = [top / name for name in sorted(folders + names) if not skipped(top / name, left_out)]
        folders[:] = [name for name in folders if top / name in entries and not (top / name).is_symlink()]
        for path in entries:
            if path.is_dir() and not path.is_symlink() and path.parent != folder:
                continue  # a folder within a student's: what it holds counts
            parts = path.relative_to(folder).parts
            if len(parts) > 1:
                students[parts[0]].append(path)
            elif path.is_dir() and not path.is_symlink():
                students[parts[0]] = []
            else:
                found.append(Submission(file_label(path.name), path, folder))
    for name, paths in sorted(students.items()):
        notebooks = [path for path in paths if path.name.endswith(SUFFIX)]
        if not notebooks:
            listed = ", ".join(str(p.relative_to(folder / name)) for p in paths[:5]) or "nothing"
            problem = f"no notebook ({SUFFIX}) in the folder {name}/ (it holds {listed})"
            found.append(Submission(safe(name), folder / name, folder, problem))
        elif len(notebooks) == 1:
            found.append(Submission(safe(name), notebooks[0], folder))
        else:
            for path in notebooks:
                inner = path.relative_to(folder / name).with_suffix("").parts
                found.append(Submission(safe("__".join((name, *inner))), path, folder))
    return sorted(found, key=lambda submission: submission.path.relative_to(folder).parts)


def skipped(path: Path, left_out: set[Path]) -> bool:
    """Hidden files and folders, macOS's archive litter, and the grader's output."""
    return path.name.startswith(".") or path.name in SKIPPED or path.absolute() in left_out


def file_label(name: str) -> str:
    return safe(name.removesuffix(SUFFIX) if name.endswith(SUFFIX) else Path(name).stem)


def safe(label: str) -> str:
    """A label that names a file anywhere: no separators, control characters or leading dots."""
    cleaned = UNSAFE.sub("_", label).strip(" ._")[:100]
    return cleaned or "submission"


def unique(found: list[Submission]) -> list[Submission]:
    """The labels made unique: where several submissions share one, the name of the folder they were
    found in goes in front; where that is not enough, a number behind."""
    counts = Counter(submission.label.casefold() for submission in found)  # macOS: Bob.md is bob.md
    for submission in found:
        if counts[submission.label.casefold()] > 1:
            folder = submission.given if submission.given.is_dir() else submission.path.parent
            submission.label = safe(f"{folder.absolute().name}__{submission.label}")
    taken, seen = {submission.label.casefold() for submission in found}, set()
    for submission in found:
        if submission.label.casefold() in seen:
            number = 2
            while f"{submission.label}-{number}".casefold() in taken:
                number += 1
            submission.label = f"{submission.label}-{number}"
            taken.add(submission.label.casefold())
        seen.add(submission.label.casefold())
    return found


def refusal(path: Path) -> str:
    """Why the file at path is refused before it is read ("" when it is a regular file)."""
    try:
        mode = path.lstat().st_mode
    except OSError as error:
        return f"refused: {error.strerror.lower()}"
    if stat.S_ISLNK(mode):
        return "refused: a symbolic link, not a file: submit the notebook itself"
    if not stat.S_ISREG(mode):
        return f"refused: not a regular file but {kind(mode)}"
    return ""


def kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO (named pipe)", stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
    }  # fmt: skip
    return next((name for test, name in kinds.items() if test(mode)), "not a file")


def read_bytes(path: Path) -> bytes:
    """The file's content, read without following a link or blocking on a FIFO; ValueError (the
    reason) when it is refused."""
    if problem := refusal(path):
        raise ValueError(problem)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:  # replaced by a link or removed since
        raise ValueError(f"refused: {error.strerror.lower()}") from None
    with os.fdopen(descriptor, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"refused: not a regular file but {kind(mode)}")
        content = file.read(MAX_BYTES + 1)
    if not content:
        raise ValueError("an empty file")
    if len(content) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES >> 20} MiB")
    return content


def take_in(submission: Submission, exercise: Exercise, codes: similarity.TodoCode, folder: Path) -> None:
    """Read the submission once into a private copy in folder (what is graded), and note its hash,
    its TODOs' code and, when it cannot be graded, why."""
    if not submission.problem:
        try:
            content = read_bytes(submission.path)
        except ValueError as error:
            submission.problem = str(error)
    if submission.problem:  # recorded once: its hash is the reason's
        submission.sha256 = hashlib.sha256(submission.problem.encode()).hexdigest()
        return
    submission.sha256 = hashlib.sha256(content).hexdigest()
    submission.copy = folder / f"{submission.label}{SUFFIX}"
    submission.copy.write_bytes(content)
    try:
        cells = read_code_cells(submission.copy)
    except Exception as error:  # noqa: BLE001 (whatever the file holds, it gets a row, not a traceback)
        why = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        cut_off = not content.rstrip().endswith(b"}")  # a notebook is a JSON object
        submission.problem = f"not a notebook: {why}" + ("; the file looks cut off" if cut_off else "")
        return
    numbers = {todo.number for todo in exercise.todos}
    if not any(cell.number(TODO_TAG) in numbers for cell in cells):
        submission.problem = (
            f"not a notebook of this exercise: it holds none of its TODO cells (tags todo-1 to "
            f"todo-{max(numbers)}); submit the exercise's notebook ({exercise.path.name}) with your answers"
        )
        return
    submission.codes = codes.of(cells)
