# Two commands from a fresh machine with Python 3.11 and make:
#   make run    install into .venv and run the main job
#   make test   install into .venv (with test extras) and run the whole suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

run: install
	$(BIN)/cutover cpus

test: install
	PYTHONASYNCIODEBUG=1 $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check bridge legacy modern workloads tests bench

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
