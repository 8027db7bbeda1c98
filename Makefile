# PVC developer entry points. The README's two commands are scripts/lab and scripts/test (plain
# sh, since a fresh Debian 12 machine may have no make); `make lab` / `make test` call them.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install lab lab-down test test-fast lint bench clean deb

install:
	./scripts/install

lab:
	./scripts/lab

lab-down:
	$(VENV)/bin/pvc-lab down

lint: install
	$(VENV)/bin/ruff check src tests bench

test:
	./scripts/test

test-fast: install
	$(VENV)/bin/pytest -q tests/unit tests/sim

bench: install
	$(PY) bench/keepalive.py
	$(PY) bench/election.py
	$(PY) bench/api_node_list.py
	$(PY) bench/lab_up.py
	$(PY) bench/storage_ops.py

# Debian packages into build/deb/ (deploy/debian/README.md); PVC_DEB_VERSION=<suffix> for a
# build suffix. Needs the build dependencies scripts/install puts in place.
deb:
	./deploy/debian/build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis src/*.egg-info
