"""The grader behind `make grade` (tools/grade.py): the exercise, the sandbox, one submission, the records."""
