# Two commands from a fresh machine with Python 3.11 and make:
#   make run    install into .venv and run the main job: both stacks behind the front door on 127.0.0.1:8000
#   make test   install into .venv (with test extras) and run the whole suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	-command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	-command -v curl >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl jq >/dev/null)
	$(BIN)/python -m pip install --quiet -e '.[test]'

run: install
	$(BIN)/cutover serve --plan cutover.toml

test: install
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check bridge legacy modern workloads tests bench

bench: install
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
