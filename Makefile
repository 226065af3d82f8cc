# Two commands: `make lab` (set up, start MLflow + Jupyter Lab) and `make test` (the whole suite).
# The others are tools: each runs one way, from here. `make help` lists them all.
PYTHON ?= python3
PORT ?= 8080
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
BWRAP := /usr/bin/bwrap
# As root, the grader sandboxes each submission with bubblewrap: make grade (and make test, whose tests
# grade) installs it.
SANDBOX := $(if $(filter 0,$(shell id -u)),$(BWRAP))
SUBMISSIONS ?=
HANDOUT ?= handout

.PHONY: lab server help test test-quick test-full lint exercise clean-notebooks handout grade bench bench-ray \
	bench-grade screenshots chromium bubblewrap clean-venv

# Set up .venv the first time, start the MLflow server (PORT=8080) and Jupyter Lab; Ctrl-C stops both.
lab: $(INSTALLED)
	$(BIN)/python -m tools.lab lab --port $(PORT) $(LAB_ARGS)

# Start only the MLflow tracking server (PORT=8080), until Ctrl-C.
server: $(INSTALLED)
	$(BIN)/python -m tools.lab server --port $(PORT)

# List the targets, a line each (from the comment above each one).
help:
	@awk '/^# /{if (!doc) doc = substr($$0, 3); next} /^[a-z][a-z-]*:/{if (doc) \
		printf "  make %-16s %s\n", substr($$1, 1, length($$1) - 1), doc} {doc = ""}' $(firstword $(MAKEFILE_LIST))

# Two workers side by side (pytest-xdist), each with its own MLflow server and Ray cluster.
TEST_WORKERS ?= 2

# Lint, then the whole suite in smoke mode, TEST_WORKERS (2) pytest workers side by side.
test: $(INSTALLED) $(SANDBOX) lint
	$(BIN)/pytest -n $(TEST_WORKERS)

# Lint, then the quick tier while editing (about a minute): no notebook, sweep or model server.
test-quick: $(INSTALLED) $(SANDBOX) lint
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not slow"

# Lint, then the whole suite with SMOKE_TEST=0: the full budgets students run.
test-full: $(INSTALLED) $(SANDBOX) lint
	SMOKE_TEST=0 $(BIN)/pytest -n $(TEST_WORKERS)

# ruff on the code and the notebooks.
lint: $(INSTALLED)
	$(BIN)/ruff check .

# ray_tune.ipynb (the exercise) from ray_tune_solution.ipynb; edit the solution, then run this.
exercise: $(INSTALLED)
	$(BIN)/python -m tools.make_exercise

# Strip outputs and execution counts from the notebooks before committing.
clean-notebooks: $(INSTALLED)
	$(BIN)/python -m tools.clean_notebooks

# The folder to give students for a graded class (HANDOUT=handout): the exercise, no solution or answers.
handout: $(INSTALLED)
	$(BIN)/python -m tools.handout $(HANDOUT)

# Grade students' notebooks into grades/: make grade SUBMISSIONS=folder/ (a folder or file per student)
# As root for the full isolation; again after a crash to resume; GRADE_ARGS="--jobs 2 --regrade bob".
grade: $(INSTALLED) $(SANDBOX)
	$(BIN)/python -m tools.grade $(SUBMISSIONS) $(GRADE_ARGS)

# What tracking each Ray Tune trial in MLflow costs (a few minutes).
bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.mlflow_logging_overhead $(BENCH_ARGS)

# How long Ray takes to start: the lab's settings against Ray's defaults (a few minutes).
bench-ray: $(INSTALLED)
	$(BIN)/python -m benchmarks.ray_startup $(BENCH_ARGS)

# What grading costs: seconds per complete submission with --jobs 1 and 2, and for more cores (~10 minutes).
bench-grade: $(INSTALLED) $(SANDBOX)
	$(BIN)/python -m benchmarks.grading $(BENCH_ARGS)


# The README's imgs/*.png, from a temporary server holding real (full-mode) runs.
screenshots: $(INSTALLED) $(CHROMIUM)
	$(BIN)/python -m tools.screenshots

# Debian's chromium for the screenshots and tests/test_ui.py (Debian/Ubuntu, as root).
chromium: $(CHROMIUM)

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Debian's bubblewrap, the sandbox each graded submission runs in (Debian/Ubuntu, as root).
bubblewrap: $(BWRAP)

$(BWRAP):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap

# (Re)install whenever requirements.txt or this file is newer than the last install.
# rfc3987_syntax comes with Jupyter (jupyter-events asks for jsonschema[format-nongpl]) and costs every
# Python process that imports ray 1.1-1.3 s (jsonschema builds its IRI parsers on import); without it
# jsonschema skips the "iri" format check, which nothing here uses. Ray starts many such processes.
$(INSTALLED): requirements.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip uninstall --quiet --yes rfc3987-syntax
	touch $@

# Remove .venv: the next make installs it afresh.
clean-venv:
	rm -rf $(VENV)
