# Two commands from a fresh machine with Python 3.11 and make:
#   make run    install into .venv and run the main job: both stacks behind the front door on 127.0.0.1:8000
#   make test   install into .venv (with the test group) and run the whole suite
# The toolkit (the twisted-cutover wheel) carries only bridge/ and its own dependencies; the example
# service's (legacy/, modern/, workloads/) come from the "example" dependency group in pyproject.toml.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench install install-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'   # 25.1: --group (PEP 735)

install-run: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . --group example

install: $(BIN)/python
	-command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	-command -v curl >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl jq >/dev/null)
	$(BIN)/python -m pip install --quiet -e . --group test

run: install-run
	$(BIN)/cutover serve --plan cutover.toml

test: install
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check bridge legacy modern workloads tests bench

bench: install
	-command -v wrk >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)   # bench frontdoor's load generator
	-command -v valgrind >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null)   # bench frontdoor_instructions
	$(BIN)/python -m pip install --quiet -e . --group bench
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build dist *.egg-info
