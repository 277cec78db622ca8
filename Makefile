# Two entry points: `make run` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp

.PHONY: run cli test lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q ".[test]"
	touch $(STAMP)

# A real (not editable) install, so the tests exercise the wheel users get,
# including twisted/plugins/shellserver_plugin.py.
install: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation --force-reinstall .

# make run ARGS="--telnet tcp:2323:interface=127.0.0.1 --registration closed"
run: install
	$(BIN)/twistd -n --pidfile= shellserver $(ARGS)

# make cli ARGS="status" -- the shellserver command, without activating .venv
cli: install
	@$(BIN)/shellserver $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build dist shellserver-data twisted/plugins/dropin.cache
