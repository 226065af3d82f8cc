"""What grading writes, as each submission finishes, so that a crash loses nothing and a second run
resumes: grades.csv (a row per submission and TODO), grades_summary.csv (a row per submission) and
a Markdown feedback file per submission to hand back to the student."""

import csv
import io
import os
import tempfile
from pathlib import Path

from tools.grading.submission import Result, Verdict

FIELDS = ["submission", "todo", "passed", "points", "max_points", "message", "sha256"]
SUMMARY_FIELDS = ["submission", "points", "max_points", "todos_passed", "seconds", "cpu_seconds", "feedback"]


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
    writer = csv.DictWriter(text, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


class Records:
    """The grades so far: those in an earlier grades.csv (complete ones), and those added now."""

    def __init__(self, out: Path, summary: Path, feedback: Path, todos: list[str]):
        self.out, self.summary, self.feedback, self.todos = Path(out), Path(summary), Path(feedback), todos
        self.rows: dict[str, list[dict]] = {}
        for row in self._read(self.out):
            self.rows.setdefault(row.get("submission", ""), []).append(row)
        for name in list(self.rows):  # a crash mid-write, or another exercise's TODOs: graded again
            rows = self.rows[name]
            if [row.get("todo") for row in rows] != todos or len({row.get("sha256") for row in rows}) != 1:
                del self.rows[name]
        earlier = {row["submission"]: row for row in self._read(self.summary)}
        self.seconds = {name: earlier[name].get("seconds", "") for name in self.rows if name in earlier}
        self.cpu_seconds = {
            name: earlier[name].get("cpu_seconds", "") for name in self.rows if name in earlier
        }
        self.feedback_files = {
            name: earlier[name].get("feedback", "") for name in self.rows if name in earlier
        }
        self._rewrite()

    @staticmethod
    def _read(path: Path) -> list[dict]:
        if not path.exists():
            return []
        with open(path, newline="") as file:
            return list(csv.DictReader(file))

    def done(self, name: str, sha256: str) -> bool:
        """Whether the submission was graded already, from a file with the same content."""
        return name in self.rows and self.rows[name][0].get("sha256") == sha256

    def forget(self, name: str) -> None:
        if self.rows.pop(name, None) is not None:
            self._rewrite()

    def add(self, result: Result, label: str) -> Path:
        """Record one graded submission: its rows appended to grades.csv (flushed to disk), its
        feedback file written, the summary rewritten. Returns the feedback file."""
        rows = [row(result, verdict) for verdict in result.verdicts]
        self.rows[result.submission] = rows
        self.seconds[result.submission] = f"{result.seconds:.0f}"
        self.cpu_seconds[result.submission] = (
            f"{result.cpu_seconds:.0f}" if result.cpu_seconds is not None else ""
        )
        with open(self.out, "a", newline="") as file:
            csv.DictWriter(file, FIELDS, lineterminator="\n").writerows(rows)
            file.flush()
            os.fsync(file.fileno())
        path = self.feedback / f"{label}.md"
        write_atomically(path, feedback(result))
        self.feedback_files[result.submission] = str(path)
        self._write_summary()
        return path

    def finish(self, order: list[str]) -> None:
        """Rewrite both CSV files in the submissions' order (a parallel run appends as they finish)."""
        position = {name: i for i, name in enumerate(order)}
        self.rows = dict(
            sorted(self.rows.items(), key=lambda item: (position.get(item[0], len(order)), item[0]))
        )
        self._rewrite()

    def _rewrite(self) -> None:
        write_atomically(self.out, csv_text(FIELDS, [r for rows in self.rows.values() for r in rows]))
        self._write_summary()

    def _write_summary(self) -> None:
        summary = []
        for name, rows in self.rows.items():
            summary.append({
                "submission": name,
                "points": sum(int(r["points"]) for r in rows),
                "max_points": sum(int(r["max_points"]) for r in rows),
                "todos_passed": f"{sum(r['passed'] == 'True' for r in rows)}/{len(rows)}",
                "seconds": self.seconds.get(name, ""),
                "cpu_seconds": self.cpu_seconds.get(name, ""),
                "feedback": self.feedback_files.get(name, ""),
            })  # fmt: skip
        write_atomically(self.summary, csv_text(SUMMARY_FIELDS, summary))


def row(result: Result, verdict: Verdict) -> dict:
    return {
        "submission": result.submission, "todo": verdict.todo, "passed": str(verdict.passed),
        "points": verdict.points, "max_points": verdict.max_points, "message": verdict.message,
        "sha256": result.sha256,
    }  # fmt: skip


def code(text: str) -> str:
    """text as Markdown inline code, backticks in it included."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def feedback(result: Result) -> str:
    """A short Markdown page for the student: the total, then each TODO's verdict, what went wrong
    (the first line) and the hint."""
    total = sum(v.max_points for v in result.verdicts)
    lines = [f"# Feedback: {Path(result.submission).name}", "", f"**{result.points} / {total} points**", ""]
    for verdict in result.verdicts:
        number = verdict.todo.removeprefix("todo-")
        status = "passed" if verdict.passed else "not passed"
        lines.append(f"- **TODO {number}** ({verdict.points}/{verdict.max_points}): {status}")
        if not verdict.passed:
            lines.append(f"  - what went wrong: {code(verdict.message)}")
            if verdict.hint:
                lines.append(f"  - hint: {verdict.hint}")
    if result.notes:
        lines += ["", "Notes from the grader:", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def progress(result: Result, feedback: Path, max_points: int, elapsed: float, where: str = "") -> str:
    """The line the grader prints as a submission is recorded."""
    on = f" on {where}" if where else ""
    return (
        f"{result.submission}: {result.points}/{max_points} points in {result.seconds:.0f} s{on} "
        f"({elapsed:.0f} s in all); feedback: {feedback}"
    )
