# kstep: common tasks. `make install` once, then `make example` or `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install example test lint typecheck testbed bench crds chart-crds image clean

# A virtual environment with kstep (editable), its optional data materializers and the
# test tools. python-dateutil<3 is pinned in pyproject.toml: without it pip backtracks
# through hundreds of botocore releases.
install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[test]'

# Run the quickstart pipeline on the embedded default (SQLite and a directory in ~/.kstep).
example:
	$(BIN)/kstep run examples/quickstart.py:training -p rows=200

# The whole test suite. Cluster tests need the test bed's binaries (`make testbed`) and are
# skipped with a one-line reason without them.
test:
	$(BIN)/pytest

lint:
	$(BIN)/ruff format --check sdk operator tests bench examples hack
	$(BIN)/ruff check sdk operator tests bench examples hack
	$(BIN)/lint-imports
	$(BIN)/mypy

# Builds (once, cached outside the repository) the Kubernetes, etcd and helm binaries.
testbed:
	hack/testbed-binaries.sh

# The container image, built with podman from a local Debian base and checked in a read-only,
# unprivileged container; no registry needed (docs/deploy.md).
image:
	hack/build-image.sh

# The Helm chart ships copies of crds/; tests/helm fails when they differ.
chart-crds:
	cp crds/*.yaml helm/kstep/files/crds/

bench:
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
