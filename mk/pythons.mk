# Every CPython that pyproject.toml claims (its classifiers, 3.9 to 3.13): a
# venv each under .venvs/py3.N (cached; rebuilt when the interpreter or
# pyproject.toml changes), the unit tier and one namespace smoke test in
# each, and a table of what ran. A claimed version the machine lacks fails.
# Run by `make test`; scripts/pythons.py says how interpreters are found.
#
#   make test-pythons                    every claimed version
#   make test-pythons PYTHONS="3.9 3.13" only these
#   make pythons-clean                   drop .venvs/

PYTHONS ?=

.PHONY: test-pythons pythons-clean

# The .venv's own version ran its unit tier in `make check`: only the smoke
# test there (--unit-done).
test-pythons: deps venv
	$(PYTHON) scripts/pythons.py --unit-done $$($(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])') $(PYTHONS)

pythons-clean:
	rm -rf .venvs

distclean: pythons-clean

TEST_SUITES += test-pythons
