# Entry points: `make run`, `make test` and `make bench`. Each builds .venv from nothing.
# Installing reports on stderr only, so `make cli ARGS="who --json" | python3 -m json.tool` reads
# nothing but the CLI's output.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deps-stamp
INSTALLED := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
DIST ?= dist

.PHONY: run cli test lint install bench bench-cluster bench-detached clean assets dist changelog

# Before 0.2.0 the distribution was called shellserver (another project's name on the package
# index): an older .venv drops it before installing txshellserver.
$(STAMP): pyproject.toml
	@echo "make: installing $(VENV) and the test dependencies (about a minute)" >&2
	@$(PYTHON) -m venv $(VENV) >&2
	@$(BIN)/python -m pip install -q --upgrade pip >&2
	@$(BIN)/python -m pip uninstall -q -y shellserver >/dev/null 2>&1 || true
	@$(BIN)/python -m pip install -q ".[test]" >&2
	@touch $(STAMP)

# What the wheel is built from: the install is redone only when one of these changed.
SOURCES := pyproject.toml README.md twisted/plugins/shellserver_plugin.py \
	$(shell find shellserver -type f ! -name '*.pyc' ! -path '*/__pycache__/*')

# A real (not editable) install, so the tests exercise the wheel users get,
# including twisted/plugins/shellserver_plugin.py.
# (The stamp's time is taken before pip runs: a file saved meanwhile is newer, so installed next time.)
$(INSTALLED): $(STAMP) $(SOURCES)
	@touch $(INSTALLED).new
	@$(BIN)/python -m pip install -q --no-deps --no-build-isolation --force-reinstall . >&2
	@mv $(INSTALLED).new $(INSTALLED)

install: $(INSTALLED)
	@:

# make run ARGS="--telnet tcp:2323:interface=127.0.0.1 --registration closed"
run: install
	$(BIN)/twistd -n --pidfile= shellserver $(ARGS)

# make cli ARGS="status" -- the shellserver command, without activating .venv
cli: install
	@$(BIN)/shellserver $(ARGS)

# make dist: the sdist, and the wheel built from it, in dist/ (docs/releasing.md);
# `pip install dist/txshellserver-*-py3-none-any.whl` installs it.
dist: $(STAMP)
	rm -f $(DIST)/txshellserver-*
	$(BIN)/python -m build --no-isolation --outdir $(DIST) .

# make changelog: newsfragments/ collected into CHANGELOG.md under the version in
# shellserver/__init__.py, the fragments removed with git rm (docs/releasing.md).
changelog: $(STAMP)
	$(BIN)/towncrier build --yes --version "$$($(BIN)/hatchling version)"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	$(BIN)/pytest

.PHONY: test-fast test-oldest clean-oldest

# The unit tests only: no real server, redis-server or browser (those are marked
# `integration`, tests/conftest.py), no lint. Under a minute (about 50 s) on 2 busy cores.
test-fast: install
	$(BIN)/pytest -q -m "not integration"

# The whole suite on the oldest Twisted pyproject.toml admits, pinned in
# .ci/twisted-oldest.txt (tests/test_ci.py keeps the two equal), in a venv of its
# own; `make test` runs it on the newest. .ci/run runs both.
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.deps-stamp

$(OLDEST_STAMP): pyproject.toml .ci/twisted-oldest.txt
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q --upgrade pip
	$(OLDEST)/bin/python -m pip install -q -c .ci/twisted-oldest.txt ".[test]"
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST)/bin/python -m pip install -q --no-deps --no-build-isolation --force-reinstall .
	@$(OLDEST)/bin/python -c 'import twisted; print("on Twisted", twisted.__version__)'
	$(OLDEST)/bin/pytest

clean: clean-oldest
clean-oldest:
	rm -rf $(OLDEST)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q ".[test,bench]"
	touch $(BENCH_STAMP)

# The C floor (bench/cfloor.c), built with the system compiler.
CFLOOR := $(BIN)/shellserver-cfloor
$(CFLOOR): bench/cfloor.c $(STAMP)
	cc -O2 -Wall -o $@ bench/cfloor.c

# Load runs on loopback (bench/README.md): N = 1,000 and 10,000 against the
# C floor, the Twisted floor and shellserver (every session kind, and a mix),
# a sweep for the plot, medians of 3 alternating runs; then the two-node run
# (bench-cluster). Exits 1 when a target is missed.
bench: $(BENCH_STAMP) $(CFLOOR) install
	$(BIN)/python bench/run.py --sizes 1000,10000 --sweep 100,300,3000 --repeat 3 \
		--kinds line,char,tls,ssh,web --mix char:60,ssh:30,web:10 --timeout 900 \
		--json bench/last-run.json --plot docs/img/bench.png; \
	status=$$?; $(BENCH_CLUSTER) || exit $$?; $(BENCH_DETACHED) || exit $$?; exit $$status

# Two nodes on Redis against one (bench/cluster.py): its own redis-server on loopback;
# N sessions (CLUSTER_N, 1,000 by default), medians of 3 runs.
CLUSTER_N ?= 1000
BENCH_CLUSTER = $(BIN)/python bench/cluster.py --sessions $(CLUSTER_N) --repeat 3 \
	--json bench/last-cluster.json
bench-cluster: $(BENCH_STAMP) install
	$(BENCH_CLUSTER)

# What a detached session costs against an idle attached one (bench/detached.py).
BENCH_DETACHED = $(BIN)/python bench/detached.py -n 2000
bench-detached: $(BENCH_STAMP) install
	$(BENCH_DETACHED)

# The browser terminal's xterm.js, refreshed from npm (webassets/package-lock.json pins the
# versions with integrity hashes); the copies in shellserver/wires/web/assets/vendor/ are
# committed, so nothing else needs npm. See docs/admin.md.
assets:
	cd webassets && npm ci --ignore-scripts --no-audit --no-fund
	$(PYTHON) webassets/refresh.py

clean:
	rm -rf $(VENV) build dist shellserver-data twisted/plugins/dropin.cache webassets/node_modules
