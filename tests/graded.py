"""The grader's view of a self-check, for the tests that run the tuning notebook in a kernel: the judge the
grader loads, on what the check observed (LAB_OBSERVATIONS), and what MLflow holds read by the check
module's own reader (SERVER_FACTS; the grader runs it in a process of its own, inside the submission's
network, which tests/test_grade.py and tests/test_sandbox.py try)."""

import os
from pathlib import Path

from tools import REPO, make_exercise
from tools.grading import judging
from tools.grading.exercise import Exercise


class GraderView:
    def __init__(self, folder: Path):
        self.folder = folder  # the kernel's LAB_OBSERVATIONS
        self.judges = judging.Judges(Exercise(make_exercise.EXERCISE, REPO))
        self.todos = {todo.name: todo for todo in self.judges.exercise.todos}

    @property
    def environment(self) -> dict:
        """The environment of a kernel whose self-checks hand their observations to this view."""
        return {**os.environ, judging.VARIABLE: str(self.folder)}

    def read_server(self, module: str, name: str, observed) -> dict:
        """What the session's MLflow server holds for a check."""
        read = self.judges.module(module)["SERVER_FACTS"][name]
        return read(os.environ["MLFLOW_TRACKING_URI"], observed)

    def verdict(self, todo: str) -> str:
        """What the grader says of the TODO's latest self-check: "" when it passes, else what is wrong."""
        try:
            self.judges.judge(self.todos[todo], self.folder, self.read_server)
            return ""
        except judging.Verdict as wrong:
            return str(wrong)
