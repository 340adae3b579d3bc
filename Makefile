# Two commands for a new user: `make run` and `make test`. Each sets up what it needs on a
# fresh Debian machine (a .venv with tokenwarden installed editable, Debian's redis-server).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench lint redis-stop clean help

help:
	@echo "make run    set up, start a local Redis (AOF under var/redis/) and tokenwarden"
	@echo "make test   set up and run the tests against a Redis started for the run"
	@echo "make bench  the benchmark (under 5 minutes): figures, targets, baselines; var/bench.json"
	@echo "make setup  only the set-up; make lint  ruff; make redis-stop  stop the local Redis"

setup: $(STAMP) redis-server

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

redis-server:
	@deploy/local/ensure-redis-server.sh

run: setup
	@deploy/local/run.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python -m tests.bench.run

lint: $(STAMP)
	$(BIN)/ruff check .

redis-stop:
	@deploy/local/redis.sh stop

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
