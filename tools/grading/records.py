"""What grading writes, in one output folder (`--out`, `grades/` by default), rewritten as each
submission finishes, so that a crash loses nothing and a second run resumes:

    grades.csv           a row per student and TODO (what resuming reads back)
    grades_summary.csv   a row per student: status, points, TODOs passed, flags, time, feedback file
    export.csv           for a learning-management system: student, points, max_points, status
    similarity.csv       for the instructor: each TODO whose code is identical to the solution's or to
                         other students' (never in the feedback)
    history.csv          every row a regrade or a new file replaced, with when it was graded and why
    feedback/<student>.md   to hand back (replaced ones move to history/)

A student's status is "graded", "unreadable" (the file is no notebook of this exercise: 0 points,
and the feedback asks for a resubmission) or "not graded" (the grader failed on it, or was stopped
first: no points yet; run it again).
"""

import csv
import io
import os
import tempfile
import time
from pathlib import Path

from tools.grading import similarity
from tools.grading.intake import Submission
from tools.grading.submission import Result

FIELDS = ["student", "submission", "status", "todo", "passed", "attempted", "points", "max_points", "message",
          "code", "sha256"]  # fmt: skip
SUMMARY_FIELDS = ["student", "submission", "status", "points", "max_points", "todos_passed", "todos", "flags",
                  "seconds", "cpu_seconds", "graded_at", "feedback", "reason"]  # fmt: skip
EXPORT_FIELDS = ["student", "points", "max_points", "status"]
SIMILARITY_FIELDS = ["student", "todo", "identical_to"]
HISTORY_FIELDS = [*FIELDS, "graded_at", "replaced_at", "why"]
GRADED, UNREADABLE, NOT_GRADED = "graded", "unreadable", "not graded"


def write_atomically(path: Path, text: str) -> None:
    """Replace path's content in one step: a reader (or a crash) never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(file.name, 0o666 & ~umask)  # as any file written plainly (a temporary file is 0600)
    os.replace(file.name, path)


def csv_text(fields: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class Records:
    """The class's grades: those recorded earlier in the output folder (complete ones), and those
    added now."""

    def __init__(self, folder: Path, todos: list[str], max_points: int, solution: dict[str, str]):
        self.folder, self.todos, self.max_points, self.solution = Path(folder), todos, max_points, solution
        self.out, self.summary = self.folder / "grades.csv", self.folder / "grades_summary.csv"
        self.export, self.similarity = self.folder / "export.csv", self.folder / "similarity.csv"
        self.history, self.feedback = self.folder / "history.csv", self.folder / "feedback"
        self.rows: dict[str, list[dict]] = {}
        for row in read_csv(self.out):
            self.rows.setdefault(row.get("student") or "", []).append(row)
        earlier = {row["student"]: row for row in read_csv(self.summary) if row.get("student")}
        self.details = {name: earlier.get(name, {}) for name in self.rows}  # seconds, graded_at, ...
        for name in list(self.rows):  # another exercise's TODOs, or another version's columns
            rows = self.rows[name]
            if (
                not name
                or [row.get("todo") for row in rows] != todos
                or len({r.get("sha256") for r in rows}) != 1
            ):
                self._retire(name, "the exercise's TODOs changed, or an older grader wrote them")
        self.not_graded: dict[str, str] = {}  # student -> why, for this run's export
        self._write()

    @staticmethod
    def outputs(folder: Path) -> list[Path]:
        """The folder, and what the grader writes in it: never taken for a submission."""
        names = ["grades.csv", "grades_summary.csv", "export.csv", "similarity.csv", "history.csv"]
        return [Path(folder), *(Path(folder) / name for name in [*names, "feedback", "history"])]

    def done(self, name: str, sha256: str) -> bool:
        """Whether the submission was graded already, from a file with the same content."""
        return name in self.rows and self.rows[name][0].get("sha256") == sha256

    def status(self, name: str) -> str:
        return self.rows[name][0]["status"] if name in self.rows else NOT_GRADED

    def add(self, submission: Submission, result: Result) -> Path:
        """Record one graded (or unreadable) submission: the rows it replaces go to the history, its
        feedback file is written, every table rewritten. Returns the feedback file."""
        name = submission.label
        if name in self.rows:
            same = self.rows[name][0].get("sha256") == result.sha256
            self._retire(name, "graded again (--regrade)" if same else "a new file")
        status = UNREADABLE if submission.problem else GRADED
        self.rows[name] = [row(submission, result, verdict, status) for verdict in result.verdicts]
        path = self.feedback / f"{name}.md"
        write_atomically(path, feedback(submission, result))
        self.details[name] = {
            "seconds": f"{result.seconds:.0f}",
            "cpu_seconds": f"{result.cpu_seconds:.0f}" if result.cpu_seconds is not None else "",
            "graded_at": now(), "feedback": str(path.relative_to(self.folder)), "reason": submission.problem,
        }  # fmt: skip
        self.not_graded.pop(name, None)
        self._write()
        return path

    def _retire(self, name: str, why: str) -> None:
        """Move a student's rows to the history, and their feedback file to history/."""
        old, details = self.rows.pop(name), self.details.pop(name, {})
        graded_at, replaced_at = details.get("graded_at", ""), now()
        rows = read_csv(self.history)
        rows += [{**r, "graded_at": graded_at, "replaced_at": replaced_at, "why": why} for r in old]
        write_atomically(self.history, csv_text(HISTORY_FIELDS, rows))
        feedback_file = self.folder / details["feedback"] if details.get("feedback") else None
        if feedback_file and feedback_file.is_file() and feedback_file.parent == self.feedback:
            kept = self.folder / "history" / f"{name}@{(graded_at or replaced_at).replace(':', '-')}.md"
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(feedback_file, kept)

    def finish(self, order: list[str]) -> None:
        """Rewrite every table in the order the students were given (a parallel run adds them as they
        finish), those recorded earlier and not given now after them."""
        position = {name: i for i, name in enumerate(order)}
        self.rows = dict(
            sorted(self.rows.items(), key=lambda item: (position.get(item[0], len(order)), item[0]))
        )
        self._write()

    def flags(self) -> dict[tuple[str, str], list[str]]:
        """(student, todo) -> the solution and the other students whose code for it is the same."""
        codes = {(name, r["todo"]): r["code"] for name, rows in self.rows.items() for r in rows}
        return similarity.identical(codes, self.solution)

    def _write(self) -> None:
        flags = self.flags()
        summary = [self._summary(name, rows, flags) for name, rows in self.rows.items()]
        for name, why in self.not_graded.items():
            if name not in self.rows:
                summary.append(
                    {"student": name, "status": NOT_GRADED, "max_points": self.max_points, "reason": why}
                )
        write_atomically(self.out, csv_text(FIELDS, [r for rows in self.rows.values() for r in rows]))
        write_atomically(self.summary, csv_text(SUMMARY_FIELDS, summary))
        write_atomically(self.export, csv_text(EXPORT_FIELDS, sorted(summary, key=lambda r: r["student"])))
        similar = [
            {"student": name, "todo": todo, "identical_to": " ".join(same)}
            for (name, todo), same in flags.items()
        ]
        write_atomically(self.similarity, csv_text(SIMILARITY_FIELDS, similar))

    def _summary(self, name: str, rows: list[dict], flags) -> dict:
        flagged = [f"{todo}: {' '.join(flags[name, todo])}" for todo in self.todos if (name, todo) in flags]
        return {
            **self.details.get(name, {}), "student": name, "submission": rows[0]["submission"],
            "status": rows[0]["status"], "points": sum(int(r["points"]) for r in rows),
            "max_points": sum(int(r["max_points"]) for r in rows),
            "todos_passed": sum(r["passed"] == "True" for r in rows), "todos": len(rows),
            "flags": "; ".join(flagged),
        }  # fmt: skip


def row(submission: Submission, result: Result, verdict, status: str) -> dict:
    code = submission.codes.get(verdict.todo)
    return {
        "student": submission.label, "submission": submission.shown, "status": status,
        "todo": verdict.todo, "passed": str(verdict.passed), "attempted": str(bool(code and code.attempted)),
        "points": verdict.points, "max_points": verdict.max_points, "message": verdict.message,
        "code": code.digest if code else "", "sha256": result.sha256,
    }  # fmt: skip


def code(text: str) -> str:
    """text as Markdown inline code, backticks in it included."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def feedback(submission: Submission, result: Result) -> str:
    """A short Markdown page for the student: the total, then each TODO's verdict: passed, not
    attempted (the stub untouched: its hint), or not passed (the first line of what went wrong, and
    the hint); for a file that could not be read, why, and to resubmit."""
    total = sum(v.max_points for v in result.verdicts)
    lines = [f"# Feedback for {submission.label} ({submission.file_name})", ""]
    if submission.problem:
        return "\n".join([
            *lines, f"**0 / {total} points: your file could not be graded.**", "",
            f"The grader could not read `{submission.file_name}`: {submission.problem}.", "",
            "**Please resubmit** the exercise's notebook itself: in Jupyter Lab, save it (File > Save "
            "Notebook), then hand in the `.ipynb` file (not a link, a copy of another file or an export).",
        ]) + "\n"  # fmt: skip
    lines += [f"**{result.points} / {total} points**", ""]
    for verdict in result.verdicts:
        number = verdict.todo.removeprefix("todo-")
        untouched = verdict.todo in submission.codes and not submission.codes[verdict.todo].attempted
        status = "passed" if verdict.passed else "not attempted" if untouched else "not passed"
        lines.append(f"- **TODO {number}** ({verdict.points}/{verdict.max_points}): {status}")
        if status == "not passed":
            lines.append(f"  - what went wrong: {code(verdict.message)}")
        if not verdict.passed and verdict.hint:
            lines.append(f"  - hint: {verdict.hint}")
    if result.notes:
        lines += ["", "Notes from the grader:", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"
