# PVC developer entry points. `make lab` and `make test` are the README's two commands;
# both run scripts/install first, which installs whatever is missing on a Debian 12 machine.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install lab lab-down test test-fast lint bench clean

install:
	./scripts/install

lab: install
	$(VENV)/bin/pvc-lab up

lab-down:
	$(VENV)/bin/pvc-lab down

lint: install
	$(VENV)/bin/ruff check src tests bench

test: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q tests/unit tests/sim

bench: install
	$(PY) bench/keepalive.py
	$(PY) bench/election.py
	$(PY) bench/api_node_list.py
	$(PY) bench/lab_up.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis src/*.egg-info
