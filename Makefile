# Two commands: `make lab` (set up, start MLflow + Jupyter Lab) and `make test` (the whole suite).
PYTHON ?= python3
PORT ?= 8080
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: lab server test test-full lint screenshots chromium clean-venv

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

# The README's imgs/*.png, from a temporary server holding real (full-mode) runs.
screenshots: $(INSTALLED) $(CHROMIUM)
	$(BIN)/python -m tools.screenshots

# Debian's chromium for the screenshots and tests/test_ui.py (Debian/Ubuntu, as root).
chromium: $(CHROMIUM)

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# (Re)install whenever requirements.txt is newer than the last install.
$(INSTALLED): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

clean-venv:
	rm -rf $(VENV)
