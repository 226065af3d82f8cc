# Two commands: `make lab` (set up, start MLflow + Jupyter Lab) and `make test` (the whole suite).
# The others are tools: each runs one way, from here.
PYTHON ?= python3
PORT ?= 8080
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium
BWRAP := /usr/bin/bwrap
# As root, the grader sandboxes each submission with bubblewrap: make grade installs it.
SANDBOX := $(if $(filter 0,$(shell id -u)),$(BWRAP))
SUBMISSIONS ?=

.PHONY: lab server test test-quick test-full lint exercise clean-notebooks bench bench-ray bench-grade grade screenshots \
	chromium bubblewrap clean-venv

lab: $(INSTALLED)
	$(BIN)/python -m tools.lab lab --port $(PORT) $(LAB_ARGS)

server: $(INSTALLED)
	$(BIN)/python -m tools.lab server --port $(PORT)

# Two workers side by side (pytest-xdist), each with its own MLflow server and Ray cluster.
TEST_WORKERS ?= 2

test: $(INSTALLED) lint
	$(BIN)/pytest -n $(TEST_WORKERS)

# The quick tier while editing (about a minute): no notebook, sweep or model server.
test-quick: $(INSTALLED) lint
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not slow"

test-full: $(INSTALLED) lint
	SMOKE_TEST=0 $(BIN)/pytest -n $(TEST_WORKERS)

lint: $(INSTALLED)
	$(BIN)/ruff check .

# ray_tune.ipynb (the exercise) from ray_tune_solution.ipynb; edit the solution, then run this.
exercise: $(INSTALLED)
	$(BIN)/python -m tools.make_exercise

# Strip outputs and execution counts from the notebooks before committing.
clean-notebooks: $(INSTALLED)
	$(BIN)/python -m tools.clean_notebooks

# What tracking each Ray Tune trial in MLflow costs (a few minutes).
bench: $(INSTALLED)
	$(BIN)/python -m benchmarks.mlflow_logging_overhead $(BENCH_ARGS)

# How long Ray takes to start: the lab's settings against Ray's defaults (a few minutes).
bench-ray: $(INSTALLED)
	$(BIN)/python -m benchmarks.ray_startup $(BENCH_ARGS)

# What grading costs: seconds per complete submission, a probe set with --jobs 1 and 2 (15-20 minutes).
bench-grade: $(INSTALLED) $(SANDBOX)
	$(BIN)/python -m benchmarks.grading $(BENCH_ARGS)

# Grade students' exercise notebooks: make grade SUBMISSIONS="a.ipynb b.ipynb" or SUBMISSIONS=folder/
# (as root for the full isolation; again after a crash to resume; GRADE_ARGS="--jobs 2 --regrade NAME")
grade: $(INSTALLED) $(SANDBOX)
	$(BIN)/python -m tools.grade $(SUBMISSIONS) $(GRADE_ARGS)

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

clean-venv:
	rm -rf $(VENV)
