# camex: userspace daemon (the venv), tests, demo, kernel module and lab.
# Per-area targets live in mk/*.mk so that each area owns its own rules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
# Debian packages every userspace target needs (namespaces, traffic, tools;
# faketime: a server whose wall clock is behind, test_restart_state.py).
APT_BASE := iproute2 iperf3 nftables tcpdump iputils-ping procps kmod faketime

.PHONY: all venv deps check lint test test-unit test-integration demo clean distclean

all: venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,dev,lab,bench]'
	touch $@

deps:
	sh scripts/install-deps.sh $(APT_BASE)

test-unit: venv
	$(PYTEST) -q -n 2 tests/unit

# ruff with the rules of pyproject.toml ([tool.ruff.lint]); `ruff check --fix`
# applies the mechanical fixes.
lint: venv
	$(VENV)/bin/ruff check .

# Namespace labs are PID-named, so two workers run side by side; -rA
# prints each lab test's measured figures.
test-integration: deps venv
	$(PYTEST) -q -n 2 tests/integration $(INTEGRATION_EXCLUDE)

demo: deps venv
	$(PY) -m lab.demo

clean:
	rm -rf build *.egg-info camex.egg-info .pytest_cache
	find . -path ./lab/vm/cache -prune -o -path ./$(VENV) -prune -o -path ./.venvs -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

include $(wildcard mk/*.mk)

# `make check`: the fast tier, before every commit (.pre-commit-config.yaml
# runs the same) and first in `make test`: lint, then what mk/*.mk add to
# CHECK_SUITES (the place for a type checker: CHECK_SUITES += typecheck),
# then the unit tier; under a minute on two idle cores.
# `make test` runs check and then every suite; mk/*.mk add theirs to
# TEST_SUITES (and benchmarks to BENCH_SUITES). scripts/tiers.sh times each
# tier and prints a table; a failed check stops it, a failed later tier
# fails it at the end. Prerequisites are expanded when a rule is read, so
# these rules come after the includes.
check: lint $(CHECK_SUITES) test-unit

test:
	@sh scripts/tiers.sh "$(MAKE)" check test-integration $(TEST_SUITES)

.PHONY: bench
bench: $(BENCH_SUITES)
