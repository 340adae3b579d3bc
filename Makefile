# Two commands for a new user: `make run` and `make test`. Each sets up what it needs on a
# fresh Debian machine (a .venv with tokenwarden installed editable, Debian's redis-server,
# redis-sentinel and prometheus for promtool; for `make test`, chromium too).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup debian-packages browser run test bench lint lock redis-stop clean help

help:
	@echo "make run    set up, start a local Redis (AOF under var/redis/) and tokenwarden"
	@echo "make test   set up and run the tests against a Redis started for the run"
	@echo "make bench  the benchmark (about 11 minutes): figures, targets, baselines; var/bench.json"
	@echo "make setup  only the set-up; make lint  ruff; make redis-stop  stop the local Redis"
	@echo "make lock   refresh requirements.lock from pyproject.toml's ranges (newest allowed)"

setup: $(STAMP) debian-packages

# Installs exactly the versions in requirements.lock (pyproject.toml keeps the ranges), so a
# library's new release tomorrow cannot break a fresh install today.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=24,<27'
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	@touch $(STAMP)

# Resolve pyproject.toml's ranges again, newest versions allowed, into requirements.lock.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4'
	$(BIN)/pip-compile --quiet --upgrade --extra test --strip-extras --no-emit-index-url \
		--no-emit-find-links --no-emit-trusted-host --output-file requirements.lock pyproject.toml

debian-packages:
	@deploy/local/ensure-debian-packages.sh

# Debian's chromium, for the web page's browser tests only.
browser:
	@deploy/local/ensure-debian-packages.sh --browser

run: setup
	@deploy/local/run.sh

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m tests.bench.run

lint: $(STAMP)
	$(BIN)/ruff check .

redis-stop:
	@deploy/local/redis.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
