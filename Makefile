# Two commands: `make lab` (set up, start MLflow + Jupyter Lab) and `make test` (the whole suite).
PYTHON ?= python3
PORT ?= 8080
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: lab server test test-full lint clean-venv

lab: $(INSTALLED)
	$(BIN)/python tools/lab.py lab --port $(PORT)

server: $(INSTALLED)
	$(BIN)/python tools/lab.py server --port $(PORT)

test: $(INSTALLED) lint
	$(BIN)/pytest

test-full: $(INSTALLED) lint
	SMOKE_TEST=0 $(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .

# (Re)install whenever requirements.txt is newer than the last install.
$(INSTALLED): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

clean-venv:
	rm -rf $(VENV)
