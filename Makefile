# camex: userspace daemon (the venv), tests, demo, kernel module and lab.
# Per-area targets live in mk/*.mk so that each area owns its own rules.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
# Debian packages every userspace target needs (namespaces, traffic, tools).
APT_BASE := iproute2 iperf3 nftables tcpdump iputils-ping procps kmod

.PHONY: all venv deps test test-unit test-integration demo clean distclean

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

# Namespace labs are PID-named, so two workers run side by side; -rA
# prints each lab test's measured figures.
test-integration: deps venv
	$(PYTEST) -q -n 2 tests/integration $(INTEGRATION_EXCLUDE)

demo: deps venv
	$(PY) -m lab.demo

clean:
	rm -rf build *.egg-info camex.egg-info .pytest_cache
	find . -path ./lab/vm/cache -prune -o -path ./$(VENV) -prune -o \
		-name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

include $(wildcard mk/*.mk)

# `make test` runs every suite; mk/*.mk add theirs to TEST_SUITES (and
# benchmarks to BENCH_SUITES). Prerequisites are expanded when a rule is
# read, so these rules come after the includes.
test: test-unit test-integration $(TEST_SUITES)

.PHONY: bench
bench: $(BENCH_SUITES)
