"""The grader behind `make grade` (tools/grade.py): what it is given (intake), the exercise, the sandbox,
one submission, the code compared (similarity), the records."""
